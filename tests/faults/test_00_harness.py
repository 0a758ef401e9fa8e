"""The fault tests run in a process of their own: no eventlet monkey-patching, no tests/conftest.py,
and the services layer never collects them."""

import os
import socket
import subprocess
import sys

import faults_harness as harness


def test_this_process_is_not_monkey_patched():
    import eventlet.patcher  # nameko imports eventlet; importing is fine, patching is not

    assert not eventlet.patcher.is_monkey_patched("socket")
    assert not eventlet.patcher.is_monkey_patched("thread")
    assert socket.socket.__module__ == "socket"
    loaded = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
    assert os.path.join(harness.REPO, "tests", "conftest.py") not in loaded


def test_services_layer_does_not_collect_the_fault_tests():
    """tools/test.sh's services layer names its folders, never tests/faults; and were tests/faults
    ever collected under tests/conftest.py (eventlet-patched), it refuses to run anything."""
    with open(os.path.join(harness.REPO, "tools", "test.sh")) as handle:
        script = handle.read()
    body = script[script.index("layer_services()"):]
    body = body[:body.index("\n}")]
    assert "tests/unit" in body and "tests/faults" not in body
    assert not [word for word in body.split() if word.rstrip("/") == "tests"], body

    proc = subprocess.run(
        [harness.PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:odoo",
         "-p", "no:cacheprovider", "--rootdir=tests", "tests/faults"],
        cwd=harness.REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    output = proc.stdout + proc.stderr
    assert not [line for line in proc.stdout.splitlines() if "::" in line], output[-3000:]
    assert "tests/faults skipped: this pytest process is eventlet-monkey-patched" in output, \
        output[-3000:]

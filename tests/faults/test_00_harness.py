"""The harness itself, on real processes.

- the fault tests run in a process of their own (no eventlet monkey-patching), and the services
  layer never collects them;
- ``make run`` (tools/run.sh): its Odoo comes back after a reload (SIGHUP, what Odoo's watchdog
  sends itself), and SIGTERM to its process group — sent again while it cleans up, as ``make``
  forwards it to its child — stops everything it started, PostgreSQL included.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request

import faults_harness as harness
import psutil
import pytest

RUN_VHOST = "cb-faults-make-run"
RUN_DB = "cb_faults_run"
RUN_START_TIMEOUT = 600  # seconds: a private PostgreSQL cluster, then a database with the addon
RELOAD_TIMEOUT = 120
STOP_TIMEOUT = 120
BANNER = "compute_bridge answers at"


def test_this_process_is_not_monkey_patched():
    import eventlet.patcher  # nameko imports eventlet; importing is fine, patching is not

    assert not eventlet.patcher.is_monkey_patched("socket")
    assert not eventlet.patcher.is_monkey_patched("thread")
    assert socket.socket.__module__ == "socket"
    loaded = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
    assert os.path.join(harness.REPO, "tests", "conftest.py") not in loaded


def test_the_services_layer_never_runs_the_fault_tests():
    """Collected under tests/conftest.py (eventlet-patched), tests/faults refuses to run."""
    proc = subprocess.run(
        [harness.PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:odoo",
         "-p", "no:cacheprovider", "--rootdir=tests", "tests/faults"],
        cwd=harness.REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    output = proc.stdout + proc.stderr
    assert not [line for line in proc.stdout.splitlines() if "::" in line], output[-3000:]
    assert "tests/faults skipped: this pytest process is eventlet-monkey-patched" in output, \
        output[-3000:]


# ---------------------------------------------------------------------------------------------
class MakeRun:
    """``tools/run.sh`` in a session of its own, on a private run folder, PostgreSQL cluster,
    Odoo port and database, against a vhost of the fault broker."""

    def __init__(self, broker, run_dir):
        broker.node.ctl("add_vhost", RUN_VHOST)
        broker.node.ctl("set_permissions", "-p", RUN_VHOST, "guest", ".*", ".*", ".*")
        self.run_dir = run_dir
        self.pg_port = harness.free_port(candidates=range(5520, 5560))
        self.http_port = harness.free_port()
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("PG", "COMPUTE_BRIDGE_", "HEARTBEAT_"))}
        env.update(COMPUTE_BRIDGE_RUN_DIR=run_dir, COMPUTE_BRIDGE_PG_PORT=str(self.pg_port),
                   COMPUTE_BRIDGE_DB=RUN_DB, ODOO_HTTP_PORT=str(self.http_port),
                   AMQP_URI=broker.guest_uri + "/" + RUN_VHOST, RABBIT_API_URI=broker.node.api_uri,
                   HEARTBEAT_INTERVAL="5")
        self.log_path = os.path.join(run_dir, "make-run.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([os.path.join(harness.REPO, "tools", "run.sh")],
                                         cwd=harness.REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def wait_started(self):
        harness.wait_until(lambda: self.proc.poll() is not None or BANNER in self.log(),
                           RUN_START_TIMEOUT, interval=1, what="make run's banner")
        assert self.proc.poll() is None, self.log()[-4000:]

    def odoo(self):
        """The Odoo server process (listening on our HTTP port)."""
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.http_port:
                return psutil.Process(conn.pid)
        return None

    def answers(self):
        url = "http://127.0.0.1:%d/web/health" % self.http_port
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def make_run(broker, tmp_path_factory):
    if harness.odoo_server.find_odoo_src(download=False) is None:
        pytest.skip("no Odoo 18.0 source")
    run = MakeRun(broker, str(tmp_path_factory.mktemp("make-run")))
    try:
        run.wait_started()
        yield run
    finally:
        run.kill()
        # the private cluster's data: outside run_dir when we are root (see PostgresCluster)
        cluster = harness.postgres.PostgresCluster(run.pg_port, run_dir=run.run_dir)
        shutil.rmtree(cluster.data, ignore_errors=True)


def test_make_run_odoo_comes_back_after_a_reload(make_run):
    """SIGHUP makes Odoo re-execute itself (as its watchdog does): it must answer again, in the
    same process, and not die with "attempted relative import with no known parent package"."""
    odoo = make_run.odoo()
    assert odoo is not None and make_run.answers()
    started = odoo.create_time()
    odoo.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: "Initiating server reload" in make_run.log(), 30,
                       what="Odoo reloading")
    harness.wait_until(lambda: not odoo.is_running() or (
        make_run.log().count("HTTP service (werkzeug) running") >= 2 and make_run.answers()),
        RELOAD_TIMEOUT, interval=0.5, what="Odoo answering after its reload")
    assert odoo.is_running() and odoo.create_time() == started, make_run.log()[-4000:]
    assert "attempted relative import" not in make_run.log()
    assert make_run.proc.poll() is None


def test_make_run_stops_everything_on_sigterm_to_its_group(make_run):
    odoo = make_run.odoo()
    session = [p for p in psutil.process_iter() if _in_tree(p, make_run.proc.pid)]
    assert harness.port_open("127.0.0.1", make_run.pg_port)
    os.killpg(make_run.proc.pid, signal.SIGTERM)
    # Signalled again while it cleans up: make forwards SIGTERM to its child, users insist.
    harness.wait_until(lambda: "==> stopping" in make_run.log() or make_run.proc.poll() is not None,
                       30, what="make run stopping")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(make_run.proc.pid, signal.SIGTERM)
    make_run.proc.wait(STOP_TIMEOUT)
    log = make_run.log()
    assert "==> stopping" in log and "stopping PostgreSQL" in log, log[-3000:]
    assert not harness.port_open("127.0.0.1", make_run.pg_port), log[-3000:]
    assert not harness.port_open("127.0.0.1", make_run.http_port)
    left = [p for p in session + [odoo] if p is not None and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
    assert not os.path.exists(os.path.join(make_run.run_dir, "stack.env"))


def _in_tree(process, root_pid):
    try:
        return any(parent.pid == root_pid for parent in process.parents())
    except psutil.Error:
        return False

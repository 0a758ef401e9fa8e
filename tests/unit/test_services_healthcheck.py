"""docker/services-healthcheck.py, the services image's HEALTHCHECK, run as Docker runs it.

Real processes: a real HTTP server stands in for /health (a file named ``health`` answers 200, no
file answers 404), and a Python process with ``nameko run`` in its argv stands in for
``nameko run`` as a child of this test process, which plays Docker's init.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(REPO, "docker", "services-healthcheck.py")
START_TIMEOUT = 10  # seconds
POLL = 0.05
RESTART_AFTER = 2


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("no %s within %ss" % (what, timeout))
        time.sleep(POLL)


@pytest.fixture
def health_server(tmp_path):
    """(url, served folder): /health answers 200 while ``folder/health`` exists, else 404."""
    folder = tmp_path / "www"
    folder.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(folder),
         str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening():
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, "HTTP server on %d" % port)
    yield "http://127.0.0.1:%d/health" % port, folder
    server.terminate()
    server.wait(timeout=START_TIMEOUT)


@pytest.fixture
def standin():
    """start(ignore_term=False) -> a child process whose command line names nameko."""
    started = []

    def start(ignore_term=False):
        trap = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
        code = "import signal, sys, time; %ssys.stdout.write('ready\\n'); sys.stdout.flush(); " \
               "time.sleep(60)" % trap
        process = subprocess.Popen([sys.executable, "-c", code, "nameko", "run", "services"],
                                   stdout=subprocess.PIPE)
        assert process.stdout.readline() == b"ready\n"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_check(url, tmp_path, init_pid=None, start_period=0):
    env = dict(os.environ, HEALTHCHECK_URL=url, HEALTHCHECK_INIT_PID=str(init_pid or os.getpid()),
               HEALTHCHECK_RESTART_AFTER=str(RESTART_AFTER),
               HEALTHCHECK_START_PERIOD=str(start_period),
               HEALTHCHECK_FAILURES_FILE=str(tmp_path / "failures"))
    return subprocess.run([sys.executable, CHECK], env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT, check=False)


def test_healthy_answers_0_and_touches_nothing(health_server, standin, tmp_path):
    url, folder = health_server
    (folder / "health").write_text("ok")
    process = standin()
    for _ in range(RESTART_AFTER + 1):
        assert run_check(url, tmp_path).returncode == 0
    assert process.poll() is None


def test_repeated_failures_stop_nameko_with_sigterm(health_server, standin, tmp_path):
    url, _ = health_server  # no health file: 404
    process = standin()
    first = run_check(url, tmp_path)
    assert first.returncode == 1 and "HTTP 404" in first.stdout
    assert process.poll() is None, "one failure must not stop the services"
    second = run_check(url, tmp_path)
    assert second.returncode == 1
    assert "SIGTERM" in second.stdout, second.stdout
    assert process.wait(timeout=START_TIMEOUT) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_gets_sigkill(health_server, standin, tmp_path):
    url, _ = health_server
    process = standin(ignore_term=True)
    for _ in range(RESTART_AFTER):
        run_check(url, tmp_path)
    time.sleep(POLL * 4)
    assert process.poll() is None, "SIGTERM was ignored: still running"
    third = run_check(url, tmp_path)
    assert "SIGKILL" in third.stdout, third.stdout
    assert process.wait(timeout=START_TIMEOUT) == -signal.SIGKILL


def test_no_answer_at_all_counts_as_a_failure(standin, tmp_path):
    url = "http://127.0.0.1:%d/health" % free_port()  # nothing listens there
    process = standin()
    results = [run_check(url, tmp_path) for _ in range(RESTART_AFTER)]
    assert [result.returncode for result in results] == [1] * RESTART_AFTER
    assert process.wait(timeout=START_TIMEOUT) == -signal.SIGTERM


def test_a_success_resets_the_count(health_server, standin, tmp_path):
    url, folder = health_server
    process = standin()
    assert run_check(url, tmp_path).returncode == 1
    (folder / "health").write_text("ok")
    assert run_check(url, tmp_path).returncode == 0
    (folder / "health").unlink()
    assert run_check(url, tmp_path).returncode == 1
    assert process.poll() is None, "failures that are not in a row must not stop the services"


# Docker's init: its argv holds the command ("docker-init -- entrypoint nameko run ..."), and it
# runs the real `nameko run` as its child.
FAKE_INIT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys, time; print(\"ready\", "
    "flush=True); time.sleep(60)', 'nameko', 'run', 'services'], stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"
    "print(child.pid, flush=True)\n"
    "child.wait()\n"
    "time.sleep(60)\n"
)


def test_the_init_process_is_never_signalled_its_nameko_child_is(health_server, tmp_path):
    url, _ = health_server
    init = subprocess.Popen([sys.executable, "-c", FAKE_INIT, "--", "/usr/local/bin/entrypoint.sh",
                             "nameko", "run", "services"], stdout=subprocess.PIPE)
    try:
        child = int(init.stdout.readline())
        outputs = [run_check(url, tmp_path, init_pid=init.pid).stdout
                   for _ in range(RESTART_AFTER)]
        assert "stopping nameko run (pid %d) with SIGTERM" % child in outputs[-1], outputs
        assert "pid %d " % init.pid not in "".join(outputs)
        time.sleep(POLL * 4)
        assert init.poll() is None, "the init process was signalled"
    finally:
        init.kill()
        init.wait()


def test_a_new_nameko_process_starts_a_new_count(health_server, standin, tmp_path):
    """The counter file outlives a container restart: the new process must not inherit it."""
    url, _ = health_server
    first = standin()
    for _ in range(RESTART_AFTER):
        run_check(url, tmp_path)
    assert first.wait(timeout=START_TIMEOUT) == -signal.SIGTERM
    second = standin()
    result = run_check(url, tmp_path)
    assert "failure 1 of" in result.stdout, result.stdout
    assert second.poll() is None


def test_failures_in_the_start_period_are_not_counted(health_server, standin, tmp_path):
    url, _ = health_server
    process = standin()
    results = [run_check(url, tmp_path, start_period=600) for _ in range(RESTART_AFTER + 1)]
    assert all(result.returncode == 1 for result in results)
    assert "not counted" in results[-1].stdout, results[-1].stdout
    assert process.poll() is None

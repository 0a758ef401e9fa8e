"""Real `nameko run` processes for the integration tests, each on the test's own vhost.

Every process is stopped on teardown (tools/harness: SIGTERM, then SIGKILL) and every wait is
bounded.
"""

import json
import os
import re
import signal
import time

import pytest
from nameko.exceptions import UnknownService
from nameko.standalone.rpc import ClusterRpcProxy

from tools.harness import nameko_run as harness_nameko

START_TIMEOUT = 30  # seconds: a cold `nameko run` on 2 busy cores takes a few
POLL = 0.1
HEARTBEAT_LINE = re.compile(r"heartbeat (\{.*\})\s*$")
# settings a developer's shell might have exported; each test sets what it means to
OUR_SETTINGS = ("AMQP_URI", "HEARTBEAT_INTERVAL", "HEARTBEAT_URL", "HEARTBEAT_SECRET",
                "WEB_SERVER_ADDRESS", "NOTIFY_VIA", "MAX_WORKERS", "LOG_LEVEL")


class NamekoRun(harness_nameko.NamekoRun):
    """One `nameko run ... services` subprocess, started in the repository root (tools/harness),
    with the waits a test needs."""

    def heartbeats(self):
        beats = []
        for line in self.log().splitlines():
            match = HEARTBEAT_LINE.search(line)
            if match:
                beats.append(json.loads(match.group(1)))
        return beats

    def wait_for(self, condition, what, timeout=START_TIMEOUT):
        """Poll `condition()` until it is true; fail with the log's tail after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if not self.alive:
                pytest.fail("%s exited (%s) while waiting for %s:\n%s"
                            % (self.command, self.proc.returncode, what, self.log()[-3000:]))
            time.sleep(POLL)
        pytest.fail("no %s within %ss from pid %s:\n%s"
                    % (what, timeout, self.pid, self.log()[-3000:]))

    def wait_for_text(self, text, timeout=START_TIMEOUT):
        return self.wait_for(lambda: text in self.log(), repr(text), timeout)

    def wait_for_heartbeat(self, after=0, timeout=START_TIMEOUT):
        """The first heartbeat after the first `after` ones."""
        beats = self.wait_for(lambda: self.heartbeats()[after:], "heartbeat", timeout)
        return beats[0]

    def terminate(self):
        """Ask for a graceful stop (nameko run stops its containers on SIGTERM)."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)


@pytest.fixture
def amqp_uri(rabbit_config):
    return rabbit_config["AMQP_URI"]


@pytest.fixture
def nameko_run(amqp_uri, tmp_path):
    """start(args=None, **env) -> a running NamekoRun; args default to the blog post's
    `--broker <this test's vhost>`."""
    started = []

    def start(args=None, **env_overrides):
        env = {k: v for k, v in os.environ.items() if k not in OUR_SETTINGS}
        env["PYTHONUNBUFFERED"] = "1"
        env.update({key: str(value) for key, value in env_overrides.items()})
        log_path = tmp_path / ("nameko-run-%d.log" % len(started))
        run = NamekoRun(args or ["--broker", amqp_uri], env=env, output=str(log_path)).start()
        started.append(run)
        return run

    yield start
    for run in started:  # all at once: each takes a few seconds to stop its containers
        run.terminate()
    for run in started:
        run.stop()


@pytest.fixture
def wait_for_compute(amqp_uri):
    """wait_for_compute() -> 3: calls compute until it answers, since its queue may not be
    declared the instant the process is up."""
    return lambda: call_compute_until_it_answers(amqp_uri)


def call_compute_until_it_answers(amqp_uri, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=5) as cluster_rpc:
                return cluster_rpc.compute.method(1, 2)
        except UnknownService:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)

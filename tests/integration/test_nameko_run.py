"""The services as the blog post runs them: `nameko run --broker ... services` subprocesses,
called through ClusterRpcProxy.

The heartbeat lines these tests read are logged at DEBUG: the tests that read them run the
services with LOG_LEVEL=DEBUG.
"""

import os
import re
import shutil
import socket
import sys
import time

import pytest
import requests
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import find_free_port

from services.dependencies import BROKER_CHECK_DEADLINE

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tools.harness.broker import RabbitNode  # noqa: E402 - the repository root, just added

CALL_TIMEOUT = 10  # seconds, for any one RPC call
BURST = 200  # calls fired at once at two instances
ALL_SERVICES = ["compute", "health", "heartbeat", "notify"]
KOMBU_MAX_RETRY_INTERVAL = 30  # seconds: ensure_connection's interval_max
# A log line as an operator reads it: date, time, level, logger, message.
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")


def test_the_blog_post(nameko_run, amqp_uri, wait_for_compute):
    service = nameko_run(LOG_LEVEL="DEBUG")
    service.wait_for_heartbeat()
    wait_for_compute()

    config = {"AMQP_URI": amqp_uri}
    with ClusterRpcProxy(config, timeout=CALL_TIMEOUT) as cluster_rpc:
        assert cluster_rpc.compute.method(99999, 99999) == 199998
        assert cluster_rpc.compute.method.call_async(99999, 99999).result() == 199998
        # the blog post's notify, called directly
        cluster_rpc.notify.send("hello from the test")

        # bad input: a typed remote error, and the worker carries on
        for bad in ["abc", None, True, float("nan"), [1, 2], {"x": 1}]:
            with pytest.raises(RemoteError) as error:
                cluster_rpc.compute.method(bad, 1)
            assert error.value.exc_type == "InvalidOperand"
        assert cluster_rpc.compute.method(1, 2) == 3

    service.wait_for_text("Operation completed 199998", timeout=CALL_TIMEOUT)
    service.wait_for_text("hello from the test", timeout=CALL_TIMEOUT)


def connected_beat(run):
    """The first beat of `run` that says the broker is connected: a beat made before its queue
    consumers are connected rightly says they are not."""
    return run.wait_for(lambda: [beat for beat in run.heartbeats() if beat["broker_connected"]],
                        "a beat with the broker connected")[0]


def test_two_instances_on_one_host_both_beat_and_share_the_work(
    nameko_run, amqp_uri, wait_for_compute
):
    # The blog post's command twice, with nothing to tell the instances apart: the second must
    # not fail on the health port, and must take work as soon as it is up.
    first = nameko_run(HEARTBEAT_INTERVAL=1, LOG_LEVEL="DEBUG")
    first_beat = connected_beat(first)
    wait_for_compute()
    served_before_second = first.heartbeats()[-1]["calls_served"]

    second = nameko_run(HEARTBEAT_INTERVAL=1, LOG_LEVEL="DEBUG")
    second_beat = connected_beat(second)

    assert first_beat["instance_id"] != second_beat["instance_id"]
    assert {first_beat["pid"], second_beat["pid"]} == {first.pid, second.pid}
    assert first_beat["interval"] == second_beat["interval"] == 1.0
    # each answers its own /health, on its own port
    assert first_beat["health_port"] != second_beat["health_port"]
    for beat in (first_beat, second_beat):
        health = requests.get("http://127.0.0.1:%d/health" % beat["health_port"], timeout=5)
        assert health.status_code == 200
        assert health.json()["instance_id"] == beat["instance_id"]

    # both keep beating, once a second
    first.wait_for_heartbeat(after=len(first.heartbeats()), timeout=5)
    second.wait_for_heartbeat(after=len(second.heartbeats()), timeout=5)

    # fire a burst until both have served some of it (bounded)
    def served(run):
        beats = run.heartbeats()
        return beats[-1]["calls_served"] if beats else 0

    deadline = time.monotonic() + 20
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=CALL_TIMEOUT) as cluster_rpc:
        while True:
            replies = [cluster_rpc.compute.method.call_async(i, i) for i in range(BURST)]
            assert [reply.result() for reply in replies] == [2 * i for i in range(BURST)]
            if served(first) > served_before_second and served(second) > 0:
                break
            assert time.monotonic() < deadline, (
                "work not shared: first served %s (had %s), second served %s"
                % (served(first), served_before_second, served(second))
            )
            time.sleep(1)  # the counters are reported by the next heartbeat


def test_run_with_the_config_file(nameko_run, amqp_uri, wait_for_compute):
    port = find_free_port()
    service = nameko_run(
        ["--config", "services/config.yaml"],
        AMQP_URI=amqp_uri, WEB_SERVER_ADDRESS="127.0.0.1:%d" % port, HEARTBEAT_INTERVAL=1,
        LOG_LEVEL="DEBUG",
    )
    beat = connected_beat(service)
    assert beat["interval"] == 1.0
    assert beat["health_port"] == port
    assert beat["services"] == ALL_SERVICES
    assert wait_for_compute() == 3

    health = requests.get("http://127.0.0.1:%d/health" % port, timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["pid"] == service.pid
    service.wait_for_text(" DEBUG services.dependencies heartbeat {")


def test_plain_run_logs_time_and_level_and_no_line_per_call(nameko_run, amqp_uri,
                                                            wait_for_compute):
    service = nameko_run()  # the blog post's command: no config file, no LOG_LEVEL
    service.wait_for_text("INFO services.dependencies heartbeat: instance ")
    wait_for_compute()
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=CALL_TIMEOUT) as cluster_rpc:
        assert cluster_rpc.compute.method(99999, 99999) == 199998
        with pytest.raises(RemoteError):
            cluster_rpc.compute.method("abc", 1)
    service.wait_for_text("(expected) error handling worker")
    service.terminate()
    service.proc.wait(timeout=30)
    lines = service.log().splitlines()
    ours = [line for line in lines if " services." in line or " nameko." in line]
    assert ours and all(LOG_LINE.match(line) for line in ours), ours[:5]
    # one line for the refused operand, no traceback under it
    assert "Traceback" not in service.log()
    # no line per call or per beat at INFO
    assert "Operation completed" not in service.log()
    assert "heartbeat {" not in service.log()


@pytest.fixture
def stoppable_broker():
    """A RabbitMQ node of this test's own (tools/harness), which it stops and starts again;
    with a user whose password must never reach a log."""
    while True:  # RabbitNode derives its epmd and distribution ports from the AMQP port
        amqp_port, api_port = find_free_port(), find_free_port()
        node = RabbitNode("health", amqp_port=amqp_port, api_port=api_port)
        ports = {amqp_port, api_port, node.dist_port, node.epmd_port}
        if len(ports) == 4 and all(port_is_free(port) for port in ports):
            break
    try:
        node.ensure_installed()
    except SystemExit as reason:  # no RabbitMQ here and no way to install it: say so
        pytest.skip("no RabbitMQ server to stop and restart: %s" % reason)
    shutil.rmtree(node.base, ignore_errors=True)
    try:
        node.start()
        node.ctl("await_startup")  # the management API may answer before the broker takes users
        node.password = "Pw-%s" % os.urandom(6).hex()
        node.ctl("add_user", "cb", node.password)
        node.ctl("set_permissions", "-p", "/", "cb", ".*", ".*", ".*")
        node.uri = "pyamqp://cb:%s@127.0.0.1:%d//" % (node.password, amqp_port)
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def port_is_free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# stoppable_broker first: set up before the services, it is stopped after them.
def test_health_and_beats_follow_a_broker_stopped_and_restarted(stoppable_broker, nameko_run):
    interval = 2
    heartbeat_secret = "hb-%s" % os.urandom(6).hex()
    with socket.socket() as probe:  # a monitor that is down: its URL's password must not leak
        probe.bind(("127.0.0.1", 0))
        monitor_url = "http://odoo:%s@127.0.0.1:%d/hb" % (heartbeat_secret,
                                                         probe.getsockname()[1])
    service = nameko_run(["--broker", stoppable_broker.uri], HEARTBEAT_INTERVAL=interval,
                         HEARTBEAT_URL=monitor_url, HEARTBEAT_SECRET=heartbeat_secret,
                         LOG_LEVEL="DEBUG")
    beat = connected_beat(service)
    assert beat["services"] == ALL_SERVICES
    health_url = "http://127.0.0.1:%d/health" % beat["health_port"]

    def health():
        return requests.get(health_url, timeout=5).status_code

    assert health() == 200
    # Within two intervals once the broker is gone; the margin is for a loaded machine.
    within = 2 * interval + BROKER_CHECK_DEADLINE + 5

    stoppable_broker.stop(kill_epmd=False)
    service.wait_for(lambda: health() == 503, "/health 503 without the broker", within)
    seen = len(service.heartbeats())
    lost = service.wait_for(lambda: service.heartbeats()[seen:], "beat without the broker")[0]
    assert lost["broker_connected"] is False

    stoppable_broker.start()
    # the queue consumers retry at their own growing pace, up to kombu's 30 s apart
    service.wait_for(lambda: health() == 200, "/health 200 with the broker back",
                     within + KOMBU_MAX_RETRY_INTERVAL)
    seen = len(service.heartbeats())
    back = service.wait_for(lambda: service.heartbeats()[seen:], "beat with the broker back")[0]
    assert back["broker_connected"] is True

    log = service.log()
    assert "broker pyamqp://cb:**@127.0.0.1:%d//: connection lost" % stoppable_broker.amqp_port \
        in log
    for secret in (stoppable_broker.password, heartbeat_secret):
        assert secret not in log
    assert "Traceback" not in log  # a lost broker is said in one line each time

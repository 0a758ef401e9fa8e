"""The services as the blog post runs them: `nameko run --broker ... services` subprocesses,
called through ClusterRpcProxy."""

import time

import pytest
import requests
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import find_free_port

CALL_TIMEOUT = 10  # seconds, for any one RPC call
BURST = 200  # calls fired at once at two instances


def test_the_blog_post(nameko_run, amqp_uri, wait_for_compute):
    service = nameko_run()
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


def test_two_instances_on_one_host_both_beat_and_share_the_work(
    nameko_run, amqp_uri, wait_for_compute
):
    # The blog post's command twice, with nothing to tell the instances apart: the second must
    # not fail on the health port, and must take work as soon as it is up.
    first = nameko_run(HEARTBEAT_INTERVAL=1)
    first_beat = first.wait_for_heartbeat()
    wait_for_compute()
    served_before_second = first.heartbeats()[-1]["calls_served"]

    second = nameko_run(HEARTBEAT_INTERVAL=1)
    second_beat = second.wait_for_heartbeat()

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
    )
    beat = service.wait_for_heartbeat()
    assert beat["interval"] == 1.0
    assert beat["health_port"] == port
    assert wait_for_compute() == 3

    health = requests.get("http://127.0.0.1:%d/health" % port, timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["pid"] == service.pid
    # config.yaml's logging: time, level and logger name before each message
    service.wait_for_text(" INFO services.heartbeat heartbeat {")

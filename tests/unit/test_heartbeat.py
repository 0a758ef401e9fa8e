"""heartbeat, health, the broker check and settings; the network mocked, or a local port."""

import json
import logging
import socket
from unittest.mock import Mock, patch

import eventlet
import pytest
import requests
from nameko.testing.services import worker_factory

from services import instance, telemetry
from services.dependencies import (
    BROKER_CHECK_VALID_INTERVALS,
    HEARTBEAT_SUMMARY_SECONDS,
    MONITOR_TIMEOUT,
    SECRET_HEADER,
    BrokerCheck,
    Monitor,
    Registration,
)
from services.entrypoints import ConfiguredTimer
from services.health import HealthService
from services.heartbeat import HeartbeatService
from services.settings import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_NOTIFY_VIA,
    heartbeat_interval,
    notify_via,
)

# What Odoo's heartbeat endpoint reads: exactly these keys, no more (no secret), no fewer.
BEAT_KEYS = {"service", "services", "host", "pid", "instance_id", "started_at", "uptime",
             "calls_served", "calls_by_service", "health_port", "broker_connected", "interval",
             "timestamp"}
SECRET = "s3cret-never-logged"


@pytest.fixture(autouse=True)
def clean_environment_and_state(monkeypatch):
    for key in ("HEARTBEAT_INTERVAL", "HEARTBEAT_URL", "HEARTBEAT_SECRET", "NOTIFY_VIA"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(instance, "_broker_connected", False)
    monkeypatch.setattr(instance, "_broker_checked", None)
    monkeypatch.setattr(instance, "_services", set())
    monkeypatch.setattr(instance, "_consumers", {})


def bound(provider, mock_container, config=None, name="heartbeat"):
    mock_container.service_name = name
    mock_container.config.update(config or {})
    mock_container.shared_extensions = {}
    provider = provider.bind(mock_container, "dependency")
    provider.setup()
    return provider


@pytest.fixture
def make_heartbeat(mock_container):
    """make_heartbeat(connected=True, **config) -> a HeartbeatService worker whose broker check
    answers `connected`, with the real Monitor (requests.post patched by the test)."""

    def make(connected=True, **config):
        config.setdefault("HEARTBEAT_INTERVAL", 5)
        monitor = bound(Monitor(), mock_container, config)

        def check():
            instance.record_broker_check(connected, 3600)
            return connected

        return worker_factory(HeartbeatService, broker_check=Mock(side_effect=check),
                              monitor=monitor)

    return make


# -- the beat ----------------------------------------------------------------------------------


def test_the_beat_carries_exactly_what_odoo_reads(make_heartbeat):
    instance.service_started("compute")
    instance.service_started("heartbeat")
    beat = make_heartbeat(HEARTBEAT_INTERVAL=7).beat()
    assert set(beat) == BEAT_KEYS
    assert beat["service"] == "heartbeat"
    assert beat["services"] == ["compute", "heartbeat"]
    assert beat["broker_connected"] is True
    assert (beat["host"], beat["pid"]) == (instance.HOST, instance.PID)
    assert beat["instance_id"] == instance.INSTANCE_ID and len(beat["instance_id"]) == 32
    assert beat["interval"] == 7.0
    assert beat["uptime"] >= 0
    assert beat["timestamp"].endswith("+00:00")
    json.dumps(beat)  # it travels as JSON (event, POST)


def test_the_beat_counts_compute_calls(make_heartbeat):
    service = make_heartbeat()
    before = service.beat()["calls_served"]
    instance.count_call()
    assert service.beat()["calls_served"] == before + 1


def test_a_connected_beat_is_dispatched_and_posted(make_heartbeat):
    service = make_heartbeat(HEARTBEAT_URL="http://monitor/hb", HEARTBEAT_SECRET=SECRET)
    with patch("services.dependencies.requests.post") as post:
        beat = service.beat()
    service.dispatch.assert_called_once_with("heartbeat", beat)
    post.assert_called_once_with(
        "http://monitor/hb", json=beat, headers={SECRET_HEADER: SECRET}, timeout=MONITOR_TIMEOUT)


def test_without_the_broker_the_beat_still_reaches_the_monitor_and_says_so(make_heartbeat):
    service = make_heartbeat(connected=False, HEARTBEAT_URL="http://monitor/hb")
    with patch("services.dependencies.requests.post") as post:
        beat = service.beat()
    assert beat["broker_connected"] is False
    assert post.call_args.kwargs["json"]["broker_connected"] is False
    service.dispatch.assert_not_called()  # it would only wait on nameko's publish retries


def test_a_failed_dispatch_does_not_stop_the_beat(make_heartbeat, caplog):
    service = make_heartbeat()
    service.dispatch.side_effect = OSError("broker gone")
    assert service.beat()["service"] == "heartbeat"
    assert "could not dispatch the heartbeat event: broker gone" in caplog.text


def heartbeat_counts():
    """{(sent or failed, via): count} of the metrics."""
    counts = {}
    for outcome, counter in (("sent", telemetry.HEARTBEATS),
                             ("failed", telemetry.HEARTBEAT_FAILURES)):
        for via in ("event", "http"):
            counts[outcome, via] = counter.labels(via)._value.get()
    return counts


def moved(before, after):
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_the_metrics_count_beats_sent_not_beats_made(make_heartbeat):
    refused = Mock()
    refused.raise_for_status.side_effect = requests.HTTPError("403 Forbidden")
    service = make_heartbeat(HEARTBEAT_URL="http://monitor/hb", HEARTBEAT_SECRET="wrong")
    before = heartbeat_counts()
    with patch("services.dependencies.requests.post", return_value=refused):
        service.beat()
        service.beat()
    assert moved(before, heartbeat_counts()) == {("sent", "event"): 2, ("failed", "http"): 2}

    unreachable = make_heartbeat(connected=False, HEARTBEAT_URL="")  # nothing is posted
    before = heartbeat_counts()
    unreachable.beat()
    assert moved(before, heartbeat_counts()) == {("failed", "event"): 1}

    answered = make_heartbeat(HEARTBEAT_URL="http://monitor/hb", HEARTBEAT_SECRET=SECRET)
    answered.dispatch.side_effect = OSError("broker gone")
    before = heartbeat_counts()
    with patch("services.dependencies.requests.post"):
        answered.beat()
    assert moved(before, heartbeat_counts()) == {("failed", "event"): 1, ("sent", "http"): 1}


# -- what the beat logs -------------------------------------------------------------------------


def beat_lines(caplog, level):
    return [r.getMessage() for r in caplog.records
            if r.name == "services.dependencies" and r.levelno == level]


def test_each_beat_is_one_debug_line_of_json(make_heartbeat, caplog):
    service = make_heartbeat()
    with caplog.at_level(logging.DEBUG, logger="services.dependencies"):
        beats = [service.beat(), service.beat()]
    lines = beat_lines(caplog, logging.DEBUG)
    assert [json.loads(line[len("heartbeat "):]) for line in lines] == beats


def test_info_has_the_first_beat_then_only_a_summary(make_heartbeat, caplog):
    service = make_heartbeat()
    with caplog.at_level(logging.INFO, logger="services.dependencies"):
        service.beat()
        service.beat()
        service.beat()
    [first] = beat_lines(caplog, logging.INFO)
    assert first.startswith("heartbeat: instance %s (pid %s) runs " % (
        instance.INSTANCE_ID, instance.PID))
    caplog.clear()
    service.monitor.summary_at -= HEARTBEAT_SUMMARY_SECONDS
    instance.count_call()
    with caplog.at_level(logging.INFO, logger="services.dependencies"):
        service.beat()
    [summary] = beat_lines(caplog, logging.INFO)
    assert summary.startswith("heartbeat: 3 beats in %ds, 1 calls served (" % (
        HEARTBEAT_SUMMARY_SECONDS))
    assert summary.endswith("broker connected: True")


def test_the_secret_is_never_logged(make_heartbeat, caplog):
    service = make_heartbeat(HEARTBEAT_URL="http://odoo:%s@monitor/hb" % SECRET,
                             HEARTBEAT_SECRET=SECRET)
    failure = requests.ConnectionError("http://odoo:%s@monitor/hb refused" % SECRET)
    with caplog.at_level(logging.DEBUG), patch("services.dependencies.requests.post",
                                               side_effect=failure):
        service.beat()
    assert "heartbeat monitor http://odoo:**@monitor/hb failed" in caplog.text
    assert SECRET not in caplog.text


# -- the monitor POST ------------------------------------------------------------------------


def test_no_url_no_post(make_heartbeat):
    with patch("services.dependencies.requests.post") as post:
        make_heartbeat().beat()
    post.assert_not_called()


@pytest.mark.parametrize(
    "failure",
    [requests.ConnectionError("refused"), requests.Timeout("slow"), ValueError("anything")],
    ids=["refused", "timeout", "other"],
)
def test_a_dead_monitor_is_a_warning_not_an_error(make_heartbeat, caplog, failure):
    service = make_heartbeat(HEARTBEAT_URL="http://monitor/hb", HEARTBEAT_SECRET="s")
    with patch("services.dependencies.requests.post", side_effect=failure):
        assert service.beat()["service"] == "heartbeat"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "heartbeat monitor http://monitor/hb failed" in warnings[0].getMessage()


def test_a_refusing_monitor_is_a_warning(mock_container, caplog):
    monitor = bound(Monitor(), mock_container, {"HEARTBEAT_URL": "http://monitor/hb"})
    response = Mock()
    response.raise_for_status.side_effect = requests.HTTPError("403 Forbidden")
    with patch("services.dependencies.requests.post", return_value=response):
        assert monitor.post({}) is False
    assert "403 Forbidden" in caplog.text


def test_a_hanging_monitor_is_cut_off(mock_container, caplog):
    monitor = bound(Monitor(), mock_container, {"HEARTBEAT_URL": "http://monitor/hb"})
    with patch("services.dependencies.MONITOR_DEADLINE", 0.05), patch(
        "services.dependencies.requests.post", side_effect=lambda *a, **k: eventlet.sleep(5)
    ):
        assert monitor.post({}) is False
    assert "did not answer within 0.05s" in caplog.text


def test_a_url_without_a_secret_is_warned_about_at_setup(mock_container, caplog):
    bound(Monitor(), mock_container, {"HEARTBEAT_URL": "http://monitor/hb"})
    assert "HEARTBEAT_SECRET is not" in caplog.text


# -- the broker check ----------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_broker_is_not_connected_and_its_loss_is_warned(
        mock_container, caplog, closed_port):
    uri = "pyamqp://guest:%s@127.0.0.1:%d//" % (SECRET, closed_port)
    check = bound(BrokerCheck(), mock_container, {"AMQP_URI": uri, "HEARTBEAT_INTERVAL": 4})
    check.reached = True
    instance.record_broker_check(True, 60)
    with caplog.at_level(logging.DEBUG):
        assert check.check() is False
        assert check.check() is False  # said again at DEBUG only
    assert instance.broker_connected() is False
    [lost] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert lost.getMessage().startswith(
        "broker pyamqp://guest:**@127.0.0.1:%d//: connection lost (" % closed_port)
    assert SECRET not in caplog.text
    assert check.valid_for == BROKER_CHECK_VALID_INTERVALS * 4


def test_a_broker_that_does_not_answer_is_cut_off(mock_container, caplog):
    with socket.socket() as silent:  # accepts the TCP connection, never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = "pyamqp://guest:guest@127.0.0.1:%d//" % silent.getsockname()[1]
        check = bound(BrokerCheck(), mock_container, {"AMQP_URI": uri})
        with patch("services.dependencies.BROKER_CHECK_DEADLINE", 0.1), \
                caplog.at_level(logging.DEBUG):
            assert check.check() is False
    assert "no answer within 0.1s" in caplog.text


def test_a_failover_url_is_reached_through_any_of_its_nodes(mock_container, rabbit_config,
                                                            closed_port, caplog):
    """A cluster's first node down (refusing) or hanging: the instance still reaches its
    broker through the next one, and /health must not say otherwise."""
    with socket.socket() as silent:  # accepts the TCP connection, never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = ";".join(["pyamqp://guest:%s@127.0.0.1:%d//" % (SECRET, closed_port),
                        "pyamqp://guest:%s@127.0.0.1:%d//" % (SECRET, silent.getsockname()[1]),
                        rabbit_config["AMQP_URI"]])
        check = bound(BrokerCheck(), mock_container, {"AMQP_URI": uri})
        with patch("services.dependencies.BROKER_CHECK_DEADLINE", 1.5):
            assert check.check() is True
        assert instance.broker_connected() is True
        uri = ";".join(uri.split(";")[:2])  # no live node left
        check = bound(BrokerCheck(), mock_container, {"AMQP_URI": uri})
        with patch("services.dependencies.BROKER_CHECK_DEADLINE", 1.0), \
                caplog.at_level(logging.DEBUG):
            assert check.check() is False
    assert SECRET not in caplog.text


def test_a_disconnected_queue_consumer_means_no_broker_connection():
    consumer = object()
    instance.record_broker_check(True, 3600)
    instance.record_consumer(consumer, connected=False)  # still waiting to reconnect
    assert instance.broker_connected() is False
    instance.record_consumer(consumer, connected=True)
    assert instance.broker_connected() is True
    instance.record_consumer(consumer, connected=False)
    instance.forget_consumer(consumer)  # its container stopped
    assert instance.broker_connected() is True


def test_a_broker_check_stands_for_a_while_only():
    instance.record_broker_check(True, 3600)
    assert instance.broker_connected() is True
    instance.record_broker_check(False, 3600)
    assert instance.broker_connected() is False
    instance.record_broker_check(True, 0.01)
    eventlet.sleep(0.05)
    assert instance.broker_connected() is False  # the checks stopped: unknown is not healthy


# -- /health -----------------------------------------------------------------------------------


def test_health_answers_200_while_the_broker_is_connected():
    instance.record_broker_check(True, 3600)
    status, headers, body = worker_factory(HealthService).health(Mock())
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["status"] == "ok"
    assert payload["broker_connected"] is True
    assert BEAT_KEYS - {"interval", "timestamp"} <= set(payload)
    assert payload["instance_id"] == instance.INSTANCE_ID


@pytest.mark.parametrize("state", ["never checked", "lost", "stale"])
def test_health_answers_503_without_a_standing_broker_connection(state):
    if state == "lost":
        instance.record_broker_check(False, 3600)
    elif state == "stale":
        instance.record_broker_check(True, -1)
    status, _headers, body = worker_factory(HealthService).health(Mock())
    assert status == 503
    assert json.loads(body)["status"] == "broker unreachable"
    assert json.loads(body)["broker_connected"] is False


# -- which services this process runs ------------------------------------------------------------


def test_a_service_is_listed_while_its_container_runs(mock_container):
    registration = bound(Registration(), mock_container, name="compute")
    registration.start()
    assert instance.services() == ["compute"]
    registration.stop()
    assert instance.services() == []
    registration.start()
    registration.kill()
    assert instance.services() == []


# -- settings ----------------------------------------------------------------------------------


def test_interval_default():
    assert heartbeat_interval({}) == DEFAULT_HEARTBEAT_INTERVAL == 30


def test_interval_from_config():
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": 2}) == 2.0
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": "0.5"}) == 0.5


def test_interval_environment_overrides_config(monkeypatch):
    monkeypatch.setenv("HEARTBEAT_INTERVAL", "1")
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": 60}) == 1.0


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "inf", "nan", [1]])
def test_a_bad_interval_falls_back_to_the_default(caplog, bad):
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": bad}) == DEFAULT_HEARTBEAT_INTERVAL
    assert "HEARTBEAT_INTERVAL" in caplog.text


@pytest.mark.parametrize(("given", "used"), [(None, "event"), ("RPC", "rpc"), ("carrier", "event")])
def test_notify_via(caplog, given, used):
    assert notify_via({"NOTIFY_VIA": given}) == used
    assert ("NOTIFY_VIA='carrier' is neither" in caplog.text) == (given == "carrier")
    assert DEFAULT_NOTIFY_VIA == "event"


def test_timer_reads_its_interval_at_setup(mock_container, monkeypatch):
    mock_container.config["HEARTBEAT_INTERVAL"] = 4
    timer = ConfiguredTimer(read_interval=heartbeat_interval).bind(mock_container, "beat")
    timer.setup()
    assert timer.interval == 4.0
    monkeypatch.setenv("HEARTBEAT_INTERVAL", "0.25")
    timer.setup()
    assert timer.interval == 0.25

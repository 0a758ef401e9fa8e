"""heartbeat, health and settings, with dependencies mocked where they would touch the network."""

import json
import logging
from unittest.mock import Mock, patch

import eventlet
import pytest
import requests
from nameko.testing.services import worker_factory

from services import instance
from services.health import HealthService
from services.heartbeat import (
    DEFAULT_INTERVAL,
    MONITOR_TIMEOUT,
    SECRET_HEADER,
    ConfiguredTimer,
    HeartbeatService,
    HeartbeatSettings,
    MonitorSettings,
    heartbeat_interval,
    post_to_monitor,
)

IDENTITY_KEYS = {"service", "host", "pid", "instance_id", "uptime", "calls_served"}


def heartbeat(url=None, secret="", interval=5.0):
    return worker_factory(
        HeartbeatService, settings=MonitorSettings(interval=interval, url=url, secret=secret)
    )


@pytest.fixture(autouse=True)
def no_interval_in_environment(monkeypatch):
    for key in ("HEARTBEAT_INTERVAL", "HEARTBEAT_URL", "HEARTBEAT_SECRET"):
        monkeypatch.delenv(key, raising=False)


# -- the payload -----------------------------------------------------------------------------


def test_payload_carries_the_instance_identity():
    beat = heartbeat(interval=7.0).beat()
    assert IDENTITY_KEYS | {"interval", "timestamp"} <= set(beat)
    assert beat["service"] == "heartbeat"
    assert beat["host"] == instance.HOST
    assert beat["pid"] == instance.PID
    assert beat["instance_id"] == instance.INSTANCE_ID
    assert len(beat["instance_id"]) == 32
    assert beat["interval"] == 7.0
    assert beat["uptime"] >= 0
    assert beat["timestamp"].endswith("+00:00")
    json.dumps(beat)  # it travels as JSON (event, POST)


def test_payload_counts_compute_calls():
    service = heartbeat()
    before = service.beat()["calls_served"]
    instance.count_call()
    assert service.beat()["calls_served"] == before + 1


def test_beat_is_logged_on_one_line_and_dispatched(caplog):
    service = heartbeat()
    with caplog.at_level(logging.INFO, logger="services.heartbeat"):
        beat = service.beat()
    lines = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("heartbeat ")
    assert json.loads(lines[0][len("heartbeat "):]) == beat
    service.dispatch.assert_called_once_with("heartbeat", beat)


def test_a_failed_dispatch_does_not_stop_the_beat(caplog):
    service = heartbeat()
    service.dispatch.side_effect = OSError("broker gone")
    assert service.beat()["service"] == "heartbeat"
    assert "could not dispatch the heartbeat event" in caplog.text


# -- the monitor POST ------------------------------------------------------------------------


def test_no_url_no_post():
    with patch("services.heartbeat.requests.post") as post:
        heartbeat(url=None).beat()
    post.assert_not_called()


def test_beat_is_posted_with_the_secret_and_a_short_timeout():
    with patch("services.heartbeat.requests.post") as post:
        beat = heartbeat(url="http://monitor/hb", secret="s3cret").beat()
    post.assert_called_once_with(
        "http://monitor/hb", json=beat, headers={SECRET_HEADER: "s3cret"}, timeout=MONITOR_TIMEOUT
    )
    assert MONITOR_TIMEOUT <= 2.5


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
        ValueError("anything else"),
    ],
    ids=["refused", "timeout", "other"],
)
def test_a_dead_monitor_is_a_warning_not_an_error(caplog, failure):
    with patch("services.heartbeat.requests.post", side_effect=failure):
        beat = heartbeat(url="http://monitor/hb", secret="s").beat()
    assert beat["service"] == "heartbeat"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "heartbeat monitor http://monitor/hb failed" in warnings[0].getMessage()


def test_a_refusing_monitor_is_a_warning(caplog):
    response = Mock()
    response.raise_for_status.side_effect = requests.HTTPError("403 Forbidden")
    with patch("services.heartbeat.requests.post", return_value=response):
        assert post_to_monitor("http://monitor/hb", "wrong", {}) is False
    assert "403 Forbidden" in caplog.text


def test_a_hanging_monitor_is_cut_off(caplog):
    with patch("services.heartbeat.MONITOR_DEADLINE", 0.05), patch(
        "services.heartbeat.requests.post", side_effect=lambda *a, **k: eventlet.sleep(5)
    ):
        started = eventlet.hubs.get_hub().clock()
        assert post_to_monitor("http://monitor/hb", "s", {}) is False
        assert eventlet.hubs.get_hub().clock() - started < 1
    assert "did not answer within" in caplog.text


def test_a_url_without_a_secret_is_warned_about_at_setup(mock_container, caplog):
    mock_container.config = {"HEARTBEAT_URL": "http://monitor/hb"}
    mock_container.shared_extensions = {}
    HeartbeatSettings().bind(mock_container, "settings").setup()
    assert "HEARTBEAT_SECRET is not" in caplog.text


# -- the interval ------------------------------------------------------------------------------


def test_interval_default():
    assert heartbeat_interval({}) == DEFAULT_INTERVAL == 30


def test_interval_from_config():
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": 2}) == 2.0
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": "0.5"}) == 0.5


def test_interval_environment_overrides_config(monkeypatch):
    monkeypatch.setenv("HEARTBEAT_INTERVAL", "1")
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": 60}) == 1.0


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "inf", "nan", [1]])
def test_a_bad_interval_falls_back_to_the_default(caplog, bad):
    assert heartbeat_interval({"HEARTBEAT_INTERVAL": bad}) == DEFAULT_INTERVAL
    assert "HEARTBEAT_INTERVAL" in caplog.text


def test_timer_reads_its_interval_at_setup(mock_container, monkeypatch):
    mock_container.config = {"HEARTBEAT_INTERVAL": 4}
    mock_container.shared_extensions = {}
    timer = ConfiguredTimer(read_interval=heartbeat_interval).bind(mock_container, "beat")
    timer.setup()
    assert timer.interval == 4.0
    monkeypatch.setenv("HEARTBEAT_INTERVAL", "0.25")
    timer.setup()
    assert timer.interval == 0.25


# -- /health -----------------------------------------------------------------------------------


def test_health_answers_ok_with_the_identity():
    status, headers, body = worker_factory(HealthService).health(Mock())
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["status"] == "ok"
    assert IDENTITY_KEYS <= set(payload)
    assert payload["instance_id"] == instance.INSTANCE_ID

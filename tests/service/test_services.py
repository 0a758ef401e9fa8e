"""Each service in a real nameko container, on the real broker (a fresh vhost per test)."""

import json
import logging
import socket

import eventlet
import pytest
import requests
from eventlet import wsgi
from nameko.events import event_handler
from nameko.exceptions import RemoteError
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from services.compute import ComputeService
from services.health import HealthService
from services.heartbeat import SECRET_HEADER, HeartbeatService
from services.notify import NotifyService

WAIT = 10  # seconds: the most any single wait in this module may take


@pytest.fixture
def config(rabbit_config):
    return dict(rabbit_config)


class HeartbeatListener:
    """Stands for whoever watches the heartbeats (the Odoo side, a monitor)."""

    name = "heartbeat_listener"

    @event_handler("heartbeat", "heartbeat")
    def on_heartbeat(self, payload):
        return payload


# -- compute and notify --------------------------------------------------------------------------


@pytest.mark.parametrize("notify_via", ["event", "rpc"])
def test_compute_tells_notify(container_factory, config, caplog, notify_via):
    config["NOTIFY_VIA"] = notify_via
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()

    notify_entrypoint = "on_operations_completed" if notify_via == "event" else "send"
    with caplog.at_level(logging.INFO, logger="services.notify"):
        with entrypoint_waiter(notify, notify_entrypoint, timeout=WAIT):
            with entrypoint_hook(compute, "method") as method:
                assert method(99999, 99999) == 199998
    assert "Operation completed 199998" in caplog.text


def test_notifications_of_a_burst_are_logged_one_line_per_call(
        container_factory, config, caplog):
    config["NOTIFY_VIA"] = "event"
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    calls = 20
    with caplog.at_level(logging.INFO, logger="services.notify"):
        with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
            replies = [compute_rpc.method.call_async(i, 1000) for i in range(calls)]
            assert [reply.result() for reply in replies] == [i + 1000 for i in range(calls)]
        with eventlet.Timeout(WAIT):
            while caplog.text.count("Operation completed 1") < calls:
                eventlet.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "services.notify"]
    assert sorted(lines) == sorted("Operation completed %d" % (i + 1000) for i in range(calls))


def test_notify_still_logs_the_single_message_event_of_earlier_versions(
        container_factory, config, caplog):
    notify = container_factory(NotifyService, config)
    notify.start()
    with caplog.at_level(logging.INFO, logger="services.notify"):
        with entrypoint_waiter(notify, "on_operation_completed", timeout=WAIT):
            event_dispatcher(config)("compute", "operation_completed", "Operation completed 7")
    assert "Operation completed 7" in caplog.text


def test_notify_is_callable_over_rpc_as_in_the_blog_post(container_factory, config, caplog):
    notify = container_factory(NotifyService, config)
    notify.start()
    with caplog.at_level(logging.INFO, logger="services.notify"):
        with ServiceRpcProxy("notify", config, timeout=WAIT) as notify_rpc:
            assert notify_rpc.send("Operation completed 42") is None
    assert "Operation completed 42" in caplog.text


def test_bad_input_is_a_typed_remote_error_and_the_worker_survives(container_factory, config):
    container_factory(ComputeService, config).start()
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute:
        for bad in ["abc", None, True, [1], {"a": 1}, "\u202e1", float("nan"), float("inf")]:
            with pytest.raises(RemoteError) as error:
                compute.method(bad, 1)
            assert error.value.exc_type == "InvalidOperand"
            assert "value1 must be a finite int or float" in error.value.value
        with pytest.raises(RemoteError) as error:
            compute.method(1e308, 1e308)
        assert error.value.exc_type == "InvalidOperand"
        assert compute.method(99999, 99999) == 199998
        assert compute.method.call_async(1.5, 1).result() == 2.5


# -- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_event_reaches_a_listener(container_factory, config):
    config["HEARTBEAT_INTERVAL"] = 0.2
    listener = container_factory(HeartbeatListener, config)
    listener.start()
    heartbeat = container_factory(HeartbeatService, config)

    with entrypoint_waiter(listener, "on_heartbeat", timeout=WAIT) as result:
        heartbeat.start()
    payload = result.get()
    assert payload["service"] == "heartbeat"
    assert payload["interval"] == 0.2
    assert {"host", "pid", "instance_id", "uptime", "calls_served", "timestamp"} <= set(payload)

    # and it goes on beating at the configured interval
    with entrypoint_waiter(listener, "on_heartbeat", timeout=WAIT) as result:
        pass
    assert result.get()["timestamp"] > payload["timestamp"]


class Monitor:
    """A real HTTP endpoint standing for the Odoo heartbeat controller."""

    def __init__(self):
        self.received = []
        self.arrived = eventlet.queue.Queue()
        self.sock = eventlet.listen(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/compute_bridge/heartbeat" % self.sock.getsockname()[1]
        self.thread = eventlet.spawn(
            wsgi.server, self.sock, self.app, log=logging.getLogger("monitor")
        )

    def app(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = {
            "path": environ["PATH_INFO"],
            "secret": environ.get("HTTP_" + SECRET_HEADER.upper().replace("-", "_")),
            "content_type": environ.get("CONTENT_TYPE"),
            "body": json.loads(environ["wsgi.input"].read(length)),
        }
        self.received.append(request)
        self.arrived.put(request)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    def close(self):
        self.thread.kill()
        self.sock.close()


@pytest.fixture
def monitor():
    server = Monitor()
    yield server
    server.close()


def test_heartbeat_is_posted_to_the_monitor_with_the_secret(container_factory, config, monitor):
    config.update(HEARTBEAT_INTERVAL=0.2, HEARTBEAT_URL=monitor.url, HEARTBEAT_SECRET="s3cret")
    container_factory(HeartbeatService, config).start()
    request = monitor.arrived.get(timeout=WAIT)
    assert request["path"] == "/compute_bridge/heartbeat"
    assert request["secret"] == "s3cret"
    assert request["content_type"] == "application/json"
    assert request["body"]["service"] == "heartbeat"
    assert monitor.arrived.get(timeout=WAIT)["body"]["timestamp"] > request["body"]["timestamp"]


def test_a_dead_monitor_does_not_stop_the_heartbeat(container_factory, config, caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    config.update(HEARTBEAT_INTERVAL=0.2, HEARTBEAT_URL="http://127.0.0.1:%d/hb" % dead_port)
    listener = container_factory(HeartbeatListener, config)
    listener.start()
    heartbeat = container_factory(HeartbeatService, config)
    with entrypoint_waiter(listener, "on_heartbeat", timeout=WAIT):
        heartbeat.start()
    with entrypoint_waiter(listener, "on_heartbeat", timeout=WAIT):
        pass  # a second beat, after the first POST failed
    assert "heartbeat monitor http://127.0.0.1:%d/hb failed" % dead_port in caplog.text


# -- /health ------------------------------------------------------------------------------------


# nameko's web_session fixture needs werkzeug.urls.url_join, gone in Werkzeug 3 (Odoo 18's pin):
# a plain HTTP call to the web_config port instead.
def test_health_over_http(container_factory, config, web_config, web_config_port):
    config.update(web_config)
    container_factory(HealthService, config).start()
    url = "http://127.0.0.1:%d/health" % web_config_port
    response = requests.get(url, timeout=WAIT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert {"host", "pid", "instance_id", "uptime", "calls_served"} <= set(body)
    assert body["health_port"] == web_config_port
    assert requests.get(url.replace("/health", "/nothing"), timeout=WAIT).status_code == 404


def test_an_explicit_health_address_that_is_taken_is_an_error(container_factory, config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config["WEB_SERVER_ADDRESS"] = "127.0.0.1:%d" % taken.getsockname()[1]
        container = container_factory(HealthService, config)
        with pytest.raises(OSError):
            container.start()

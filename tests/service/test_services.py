"""Each service in a real nameko container, on the real broker (a fresh vhost per test)."""

import contextlib
import json
import logging
import socket
import sys
import urllib.parse

import eventlet
import pytest
import requests
from eventlet import wsgi
from nameko.events import event_handler
from nameko.exceptions import RemoteError
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_hook, entrypoint_waiter
from nameko.testing.utils import find_free_port

from services import entrypoints, telemetry
from services.compute import ComputeService
from services.dependencies import SECRET_HEADER
from services.health import HealthService
from services.heartbeat import HeartbeatService
from services.notify import NotifyService

WAIT = 10  # seconds: the most any single wait in this module may take
LONGEST_INT = 10 ** sys.get_int_max_str_digits() - 1  # the longest int Python writes out


@pytest.fixture
def config(rabbit_config):
    return dict(rabbit_config)


@pytest.fixture
def closed_port():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        with entrypoint_waiter(notify, notify_entrypoint, timeout=WAIT):
            with entrypoint_hook(compute, "method") as method:
                assert method(99999, 99999) == 199998
    assert "Operation completed 199998" in caplog.text


class TraceIdsOfLines(logging.Handler):
    """Each line logged, with the trace id current where it was logged (what the services' log
    formatter appends)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.name, record.getMessage(), telemetry.current_trace_id()))


@pytest.mark.parametrize("notify_via", ["event", "rpc"])
def test_a_call_without_a_trace_gets_one_for_compute_and_notify(container_factory, config,
                                                                notify_via):
    # a caller that sends no traceparent (nameko shell, another service): compute's worker
    # starts the trace, and passes its own span on to notify
    config["NOTIFY_VIA"] = notify_via
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    handler = TraceIdsOfLines()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        notify_entrypoint = "on_operations_completed" if notify_via == "event" else "send"
        with entrypoint_waiter(notify, notify_entrypoint, timeout=WAIT):
            with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
                assert compute_rpc.method(40, 2) == 42
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    [compute_trace] = {trace for name, message, trace in handler.lines
                       if name == "services.compute" and message.endswith(" = 42")}
    [notify_trace] = {trace for name, message, trace in handler.lines
                      if name == "services.notify" and message == "Operation completed 42"}
    assert compute_trace is not None
    assert notify_trace == compute_trace


@pytest.mark.parametrize("junk", [123, None, ["00-x"], {"a": 1}, "", "00-zz-zz-01"])
def test_junk_trace_context_is_ignored_and_the_service_lives_on(container_factory, config,
                                                                caplog, junk):
    # anyone who may publish on the broker can put any AMQP value in these headers
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    # compute's own notification first: a waiter below must not take it for the one it waits for
    with entrypoint_waiter(notify, "on_operations_completed", timeout=WAIT):
        with ServiceRpcProxy("compute", config, context_data={"traceparent": junk},
                             timeout=WAIT) as compute_rpc:
            assert compute_rpc.method(40, 2) == 42
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        with entrypoint_waiter(notify, "on_operations_completed", timeout=WAIT):
            dispatch = event_dispatcher(config, headers={"nameko.traceparents": junk})
            dispatch("compute", "operations_completed", ["Operation completed 7"])
        with entrypoint_waiter(notify, "on_operations_completed", timeout=WAIT):
            dispatch = event_dispatcher(config, headers={"nameko.traceparents": [junk, 5]})
            dispatch("compute", "operations_completed", ["Operation completed 8"])
    assert "Operation completed 7" in caplog.text
    assert "Operation completed 8" in caplog.text
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
        assert compute_rpc.method(1, 2) == 3  # the containers are still running


def wait_for(condition, what):
    with eventlet.Timeout(WAIT, exception=AssertionError("still waiting for " + what)):
        while not condition():
            eventlet.sleep(0.05)


def publish_raw(config, exchange, routing_key, body, **properties):
    """Publish as anyone who may publish on the broker can, bypassing nameko's clients."""
    from kombu import Connection, Exchange

    with Connection(config["AMQP_URI"]) as connection:
        connection.Producer().publish(body, exchange=Exchange(exchange, type="topic"),
                                      routing_key=routing_key, **properties)


JSON_REQUEST = dict(body=json.dumps({"args": [1, 2], "kwargs": {}}),
                    content_type="application/json", content_encoding="utf-8")


@pytest.mark.parametrize("request_properties", [
    dict(JSON_REQUEST),  # no reply_to: nowhere to answer
    dict(body=b'{"args": [1, 2], "kwargs": {}}', content_type="application/data",
         content_encoding="binary", reply_to="someone"),  # a type nameko cannot answer in
], ids=["no-reply-to", "binary-content-type"])
def test_a_request_that_cannot_be_answered_is_dropped_and_the_service_lives_on(
        container_factory, config, caplog, request_properties):
    # anyone who may publish on the broker can send a request nameko cannot reply to; nameko
    # would kill the container, and the request, requeued, every instance that takes it
    compute = container_factory(ComputeService, config)
    compute.start()
    dropped = telemetry.ERRORS.labels("compute", "method", entrypoints.UNANSWERABLE_REQUEST)
    before = dropped._value.get()
    publish_raw(config, "nameko-rpc", "compute.method", **request_properties)
    wait_for(lambda: dropped._value.get() > before, "the request to be dropped")
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
        assert compute_rpc.method(1, 2) == 3  # the container is still running
    assert "cannot be answered" in caplog.text
    assert dropped._value.get() - before == 1


def publish_with_py_amqp(config, exchange, routing_key, message):
    """Publish with py-amqp itself, which sends property bytes as they are given."""
    import amqp

    parts = urllib.parse.urlsplit(config["AMQP_URI"])
    with amqp.Connection("%s:%s" % (parts.hostname, parts.port), userid=parts.username,
                         password=parts.password,
                         virtual_host=urllib.parse.unquote(parts.path[1:]) or "/") as connection:
        channel = connection.channel()
        channel.basic_publish(message, exchange=exchange, routing_key=routing_key)


def far_timestamp_header():
    """A header whose AMQP timestamp is out of the range of datetime (RabbitMQ passes it on)."""
    import datetime
    import types

    import amqp.serialization

    strict_encode = amqp.serialization.dumps

    def encode(*args):
        saved = amqp.serialization.calendar
        amqp.serialization.calendar = types.SimpleNamespace(timegm=lambda _time: 2 ** 64 - 1)
        try:
            return strict_encode(*args)
        finally:
            amqp.serialization.calendar = saved
    return {"nameko.user_id": datetime.datetime(2000, 1, 1)}, encode


@pytest.mark.parametrize("case", ["reply_to", "correlation_id", "content_type", "routing_key",
                                  "timestamp_header", "event_app_id"])
def test_bytes_that_are_not_text_in_a_message_do_not_stop_the_services(container_factory,
                                                                        config, case):
    # py-amqp decodes properties and routing keys as strict UTF-8 while it reads the frames:
    # one invalid byte (anyone who may publish can send it) stopped the consumer, the container
    # and, the message requeued, every instance that took it
    import amqp
    import amqp.serialization

    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    body = json.dumps({"args": [1, 2], "kwargs": {}})
    properties = dict(content_type="application/json", reply_to="nobody-listens",
                      correlation_id="c1")
    exchange, routing_key = "nameko-rpc", "compute.method"
    encode = None
    if case in ("reply_to", "correlation_id", "content_type"):
        properties[case] = b"\xff\xfe"
    elif case == "routing_key":
        routing_key = b"compute.\xff"
    elif case == "timestamp_header":
        properties["application_headers"], encode = far_timestamp_header()
    else:
        exchange, routing_key, body = "compute.events", "operations_completed", '["x"]'
        properties["app_id"] = b"\xc3"
    if encode is not None:
        saved = amqp.serialization.dumps
        amqp.serialization.dumps = encode
    try:
        publish_with_py_amqp(config, exchange, routing_key, amqp.Message(body, **properties))
    finally:
        if encode is not None:
            amqp.serialization.dumps = saved
    eventlet.sleep(1)  # the services read it (or die of it)
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
        assert compute_rpc.method(1, 2) == 3  # the containers are still running
    with entrypoint_waiter(notify, "on_operations_completed", timeout=WAIT):
        event_dispatcher(config)("compute", "operations_completed", ["Operation completed 5"])


def test_a_header_too_long_to_pass_on_does_not_keep_compute_from_telling_notify(
        container_factory, config):
    # nameko passes every header of a request on to the calls its worker makes, its name
    # prefixed with "nameko.": a name of 249 to 255 bytes then no longer fits in AMQP, and the
    # call to notify failed (leaving an entry behind in nameko's reply listener)
    config["NOTIFY_VIA"] = "rpc"
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    with entrypoint_waiter(notify, "send", timeout=WAIT):
        publish_raw(config, "nameko-rpc", "compute.method", reply_to="nobody-listens",
                    headers={"k" * 250: "v"}, **JSON_REQUEST)


@pytest.mark.parametrize("call_id_stack", [5, [1], [["a"], {"b": 1}]])
def test_a_junk_call_id_stack_is_ignored_and_the_services_live_on(container_factory, config,
                                                                   call_id_stack):
    # nameko joins the stack of call ids for its log lines: anything but strings in that
    # header (from anyone who may publish) stopped the container before its worker ran
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    headers = {"nameko.call_id_stack": call_id_stack}
    with entrypoint_waiter(compute, "method", timeout=WAIT):
        publish_raw(config, "nameko-rpc", "compute.method", reply_to="nobody-listens",
                    headers=headers, **JSON_REQUEST)
    with entrypoint_waiter(notify, "on_operations_completed", timeout=WAIT):
        dispatch = event_dispatcher(config, headers=headers)
        dispatch("compute", "operations_completed", ["Operation completed 9"])
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
        assert compute_rpc.method(1, 2) == 3  # the containers are still running


def test_notifications_of_a_burst_are_logged_one_line_per_call(
        container_factory, config, caplog):
    config["NOTIFY_VIA"] = "event"
    compute = container_factory(ComputeService, config)
    notify = container_factory(NotifyService, config)
    compute.start()
    notify.start()
    calls = 20
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        with ServiceRpcProxy("compute", config, timeout=WAIT) as compute_rpc:
            replies = [compute_rpc.method.call_async(i, 1000) for i in range(calls)]
            assert [reply.result() for reply in replies] == [i + 1000 for i in range(calls)]
        with eventlet.Timeout(WAIT):
            while caplog.text.count("Operation completed 1") < calls:
                eventlet.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "services.notify"]
    assert sorted(lines) == sorted("Operation completed %d" % (i + 1000) for i in range(calls))


def test_notify_is_callable_over_rpc_as_in_the_blog_post(container_factory, config, caplog):
    notify = container_factory(NotifyService, config)
    notify.start()
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
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
        for too_large in [(1e308, 1e308), (LONGEST_INT, 1)]:
            with pytest.raises(RemoteError) as error:
                compute.method(*too_large)
            assert error.value.exc_type == "InvalidOperand"
        assert compute.method(LONGEST_INT, 0) == LONGEST_INT
        assert compute.method(99999, 99999) == 199998
        assert compute.method.call_async(1.5, 1).result() == 2.5


def test_a_refused_operand_is_logged_on_one_line(container_factory, config, caplog):
    container_factory(ComputeService, config).start()
    with ServiceRpcProxy("compute", config, timeout=WAIT) as compute:
        with pytest.raises(RemoteError):
            compute.method("abc", 1)
    [refused] = [record for record in caplog.records if record.name == "nameko.containers"
                 and record.levelno == logging.WARNING]
    assert refused.exc_info is None
    line = logging.Formatter().format(refused)
    assert "\n" not in line
    assert line.endswith(": value1 must be a finite int or float, got 'abc' (str)")


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
    assert payload["services"] == ["heartbeat"]  # the only container of ours in this test
    assert payload["broker_connected"] is True
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
    assert request["body"]["broker_connected"] is True
    assert monitor.arrived.get(timeout=WAIT)["body"]["timestamp"] > request["body"]["timestamp"]


def test_a_dead_monitor_does_not_stop_the_heartbeat(container_factory, config, caplog,
                                                    closed_port):
    dead_port = closed_port
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
def get_health(port):
    return requests.get("http://127.0.0.1:%d/health" % port, timeout=WAIT)


def test_health_over_http(container_factory, config, web_config, web_config_port, caplog):
    caplog.set_level(logging.DEBUG, logger="nameko.web.server")
    config.update(web_config, HEARTBEAT_INTERVAL=0.2)
    listener = container_factory(HeartbeatListener, config)
    listener.start()
    container_factory(HealthService, config).start()
    with entrypoint_waiter(listener, "on_heartbeat", timeout=WAIT):
        container_factory(HeartbeatService, config).start()  # its first beat checks the broker
    response = get_health(web_config_port)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["broker_connected"] is True
    assert body["services"] == ["health", "heartbeat"]
    assert {"host", "pid", "instance_id", "uptime", "calls_served"} <= set(body)
    assert body["health_port"] == web_config_port
    url = "http://127.0.0.1:%d/nothing" % web_config_port
    assert requests.get(url, timeout=WAIT).status_code == 404
    # one access line per check, at DEBUG: a health check every few seconds is no news
    access = [record for record in caplog.records if "GET /health HTTP/1.1" in record.getMessage()]
    assert access and {record.levelno for record in access} == {logging.DEBUG}


class BrokerLink:
    """A TCP link to the real broker that a test cuts and restores, as a stopped broker (or a
    lost network) would: every connection through it is shut, and new ones are refused."""

    def __init__(self, amqp_uri):
        parts = urllib.parse.urlsplit(amqp_uri)
        self.target = (parts.hostname, parts.port)
        self.port = find_free_port()
        self.uri = parts._replace(netloc="%s@127.0.0.1:%d" % (
            parts.netloc.rsplit("@", 1)[0], self.port)).geturl()
        self.sockets = []
        self.restore()

    def restore(self):
        self.server = eventlet.listen(("127.0.0.1", self.port))
        self.acceptor = eventlet.spawn(self._accept)

    def _accept(self):
        while True:
            client, _address = self.server.accept()
            upstream = eventlet.connect(self.target)
            self.sockets += [client, upstream]
            eventlet.spawn(self._pipe, client, upstream)
            eventlet.spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self):
        self.acceptor.kill()
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets = []


@pytest.fixture
def broker_link(config):
    link = BrokerLink(config["AMQP_URI"])
    yield link
    link.cut()


def next_beat(monitor, connected):
    """The body of the next beat the monitor hears with broker_connected == `connected`."""
    with eventlet.Timeout(WAIT):
        while True:
            body = monitor.arrived.get()["body"]
            if body["broker_connected"] is connected:
                return body


# broker_link first: set up before the containers, it is torn down after them (a container
# cannot stop while its consumer waits to reconnect).
def test_health_and_beats_follow_the_broker_connection(
        broker_link, container_factory, config, web_config, web_config_port, monitor):
    direct = dict(config)
    config.update(web_config, AMQP_URI=broker_link.uri, HEARTBEAT_INTERVAL=0.2,
                  HEARTBEAT_URL=monitor.url, HEARTBEAT_SECRET="s3cret")
    for service in (ComputeService, HealthService, HeartbeatService):
        container_factory(service, config).start()
    next_beat(monitor, connected=True)
    assert get_health(web_config_port).status_code == 200

    broker_link.cut()
    # the beat still reaches the monitor, and says the broker is lost
    assert next_beat(monitor, connected=False)["services"] == ["compute", "health", "heartbeat"]
    response = get_health(web_config_port)
    assert response.status_code == 503
    assert response.json()["status"] == "broker unreachable"

    broker_link.restore()
    # connected again once compute's consumer, retrying on its own pace, is back
    next_beat(monitor, connected=True)
    assert get_health(web_config_port).json()["status"] == "ok"
    with ServiceRpcProxy("compute", direct, timeout=WAIT) as compute:
        assert compute.method(1, 2) == 3


# -- queue types (a RabbitMQ cluster) ------------------------------------------------------------


class EventQueueOwner:
    """A service with a reliable event queue (outlives it) and an auto-delete one (dies with it)."""

    name = "event_queue_owner"

    @entrypoints.event_handler("heartbeat", "heartbeat")
    def reliable(self, payload):
        return payload

    @entrypoints.event_handler("heartbeat", "heartbeat", reliable_delivery=False)
    def transient(self, payload):
        return payload


def queue_types(rabbit_manager, vhost):
    return {queue["name"]: queue["type"] for queue in rabbit_manager.get_queues(vhost)}


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_lasting_queues_have_the_queue_type_setting_and_reply_queues_are_classic(
        container_factory, config, rabbit_manager, queue_type):
    config["QUEUE_TYPE"] = queue_type
    vhost = urllib.parse.urlsplit(config["AMQP_URI"]).path[1:]
    for service in (ComputeService, EventQueueOwner):
        container_factory(service, config).start()
    with ServiceRpcProxy("compute", config) as compute:
        assert compute.method(2, 3) == 5
    types = queue_types(rabbit_manager, vhost)
    assert types["rpc-compute"] == queue_type
    assert types["evt-heartbeat-heartbeat--event_queue_owner.reliable"] == queue_type
    assert types["evt-heartbeat-heartbeat--event_queue_owner.transient"] == "classic"
    compute_replies = [name for name in types if name.startswith("rpc.reply-compute-")]
    assert compute_replies and all(types[name] == "classic" for name in compute_replies)

"""Metrics and tracing end to end: a real Odoo server (4 prefork workers) calling real
`nameko run` services over a real broker, both exporting spans to a collector stand-in.

- one click (a JSON-RPC call_button with a W3C traceparent) gives one trace id in the log lines of
  Odoo, compute and notify, and spans of both sides reach the OTLP/HTTP collector;
- the counters and histograms of both metrics endpoints move by exactly the calls made, Odoo's
  summed over its workers; its endpoint refuses a scrape without the bearer token;
- a collector that accepts connections and never answers keeps no process from stopping within
  Docker's grace;
- metrics never break a call: with the metrics directory removed under a running server (another
  server sharing the data_dir from another PID namespace once did that) or a wrong
  PROMETHEUS_MULTIPROC_DIR, clicks still work and the endpoint still answers.
"""

import collections
import glob
import http.server
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import uuid

import pytest
import requests
from odoo_stack import database_name, drop_database, odoo_src, postgres_env

from tools.harness.common import free_port
from tools.harness.odoo_server import OdooServer, write_odoo_conf

WORKERS = 4
CLICKS = 12  # spread over the workers by concurrent requests
CLICK_THREADS = 4
DOCKER_STOP_GRACE = 10  # seconds between `docker stop`'s SIGTERM and its SIGKILL
RECYCLE_REQUESTS = 2  # --limit-request of the server whose metrics directory is removed
RECYCLED_CLICKS = 6  # each click is 2 requests: every worker is replaced at least once
HTTP_TIMEOUT = 60  # seconds, for any one request to Odoo
WAIT_TIMEOUT = 30  # seconds, for a log line or exported spans
TOKEN = secrets.token_hex(16)
ODOO_LOG_LINE = re.compile(r"^\S+ \S+ (\d+) INFO \S+ odoo\.addons\.compute_bridge\.models\."
                           r"compute_operation: Suma of 1 operations: all done .*trace_id=(\w+)$")
METRIC_LINE = re.compile(r"^(\w+)(\{[^}]*\})? (\S+)$")


class Collector(http.server.ThreadingHTTPServer):
    """A stand-in for an OpenTelemetry collector: counts the spans POSTed to /v1/traces (OTLP/HTTP,
    protobuf), by the service.name of their resource."""

    def __init__(self):
        self.spans = collections.Counter()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), CollectorHandler)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests += 1
        for resource_spans in request.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes
                     if a.key == "service.name"]
            count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            self.server.spans[names[0] if names else ""] += count
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def odoo_database(tmp_path_factory):
    """A database with compute_bridge installed, and the configuration to serve it."""
    src = odoo_src()
    pg = postgres_env()
    db = database_name("observability")
    drop_database(pg, db)
    folder = tmp_path_factory.mktemp("observability")
    conf = str(folder / "odoo.conf")
    write_odoo_conf(conf, http_port=free_port(), extra=(
        "db_host=%s" % pg["PGHOST"], "db_port=%s" % pg["PGPORT"], "db_user=%s" % pg["PGUSER"],
        "db_password=%s" % pg.get("PGPASSWORD", "False"), "data_dir=%s" % (folder / "data"),
        "max_cron_threads=0"))
    installer = OdooServer(src, conf, db, 0, data_dir=str(folder / "data"))
    installer.run("-i", "compute_bridge", output=str(folder / "install.log"))
    yield src, conf, db, folder
    drop_database(pg, db)


@pytest.fixture
def odoo(odoo_database, amqp_uri, collector):
    """start(*args, **env) -> an Odoo server with WORKERS workers on this test's broker vhost."""
    src, conf, db, folder = odoo_database
    servers = []

    def start(*args, **env):
        port = free_port()
        server = OdooServer(src, conf, db, port, output=str(folder / ("odoo-%s.log" % port)),
                            env=dict({"COMPUTE_BRIDGE_BROKER_URL": amqp_uri,
                                      "COMPUTE_BRIDGE_METRICS_TOKEN": TOKEN}, **env),
                            data_dir=str(folder / "data"))
        server.start("--workers=%d" % WORKERS, "--http-port=%d" % port,
                     "--gevent-port=%d" % free_port(), "--log-level=info", *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Client:
    """An Odoo web session: what the browser does when a user presses a button."""

    def __init__(self, server):
        self.url = server.url
        self.session = requests.Session()
        self.call("/web/session/authenticate",
                  {"db": server.db, "login": "admin", "password": "admin"})

    def call(self, path, params, headers=None):
        response = self.session.post(self.url + path, headers=headers, timeout=HTTP_TIMEOUT,
                                     json={"jsonrpc": "2.0", "method": "call", "params": params})
        response.raise_for_status()
        body = response.json()
        assert "error" not in body, body["error"]
        return body["result"]

    def click_suma(self, field_1, field_2, traceparent=None):
        ids = self.call("/web/dataset/call_kw", {
            "model": "compute.operation", "method": "create",
            "args": [[{"field_1": field_1, "field_2": field_2}]], "kwargs": {}})
        headers = {"traceparent": traceparent} if traceparent else None
        return self.call("/web/dataset/call_button", {
            "model": "compute.operation", "method": "action_suma", "args": [ids], "kwargs": {}},
            headers=headers)


def scrape(url, token=None, scheme="Bearer"):
    headers = {"Authorization": "%s %s" % (scheme, token)} if token else {}
    response = requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    values = {}
    for line in response.text.splitlines():
        match = METRIC_LINE.match(line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def delta(before, after, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


def wait_for(condition, what):
    import time

    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "no %s within %ss" % (what, WAIT_TIMEOUT)
        time.sleep(0.2)


def test_one_click_has_one_trace_id_in_odoo_compute_and_notify(nameko_run, wait_for_compute,
                                                               odoo, collector):
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    services = nameko_run(LOG_LEVEL="DEBUG", **otel)
    wait_for_compute()
    server = odoo(**otel)
    trace_id = uuid.uuid4().hex
    traceparent = "00-%s-%s-01" % (trace_id, uuid.uuid4().hex[:16])

    Client(server).click_suma(40, 2, traceparent)

    def odoo_lines():
        with open(server.output) as handle:
            return [match.group(2) for match in map(ODOO_LOG_LINE.match, handle) if match]

    wait_for(odoo_lines, "Suma line in Odoo's log")
    assert odoo_lines() == [trace_id]
    services.wait_for_text("services.compute method(40.0, 2.0) = 42.0 trace_id=%s" % trace_id)
    services.wait_for_text("services.notify Operation completed 42.0 trace_id=%s" % trace_id)
    # spans of both sides reach the collector (the services' batch is sent every 100 ms, Odoo's
    # worker exports its own batch in the same way)
    wait_for(lambda: collector.spans["odoo"] >= 2 and collector.spans["nameko"] >= 2,
             "spans of Odoo and of the services at the collector: %s" % collector.spans)


def test_metrics_move_by_exactly_the_calls_made(nameko_run, wait_for_compute, odoo):
    health_port = free_port()
    nameko_run(WEB_SERVER_ADDRESS="127.0.0.1:%d" % health_port)
    wait_for_compute()  # one call, before the first scrape
    server = odoo()
    odoo_metrics = server.url + "/compute_bridge/metrics"
    services_metrics = "http://127.0.0.1:%d/metrics" % health_port

    # refused without the token, or with a wrong one; nothing in the answer
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.get(odoo_metrics, headers=headers, timeout=HTTP_TIMEOUT)
        assert (response.status_code, response.text) == (403, ""), headers

    clients = [Client(server) for _ in range(CLICK_THREADS)]
    odoo_before, services_before = scrape(odoo_metrics, TOKEN), scrape(services_metrics)

    def clicks(client, count):
        for number in range(count):
            client.click_suma(number, 1)

    threads = [threading.Thread(target=clicks, args=(client, CLICKS // CLICK_THREADS))
               for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT * CLICKS)
    # a remote error: compute refuses a sum beyond the float range (InvalidOperand)
    with pytest.raises(AssertionError, match="refused the operands"):
        clients[0].call("/web/dataset/call_kw", {
            "model": "compute.operation", "method": "compute_sum", "args": [1e308, 1e308],
            "kwargs": {}})
    odoo_after, services_after = scrape(odoo_metrics, TOKEN), scrape(services_metrics)

    call = '{method="method",service="compute"}'
    ok = '{method="method",outcome="ok",service="compute"}'
    failed = '{method="method",outcome="failed",service="compute"}'
    assert delta(odoo_before, odoo_after, "compute_bridge_calls_total" + ok) == CLICKS
    assert delta(odoo_before, odoo_after, "compute_bridge_calls_total" + failed) == 1
    assert delta(odoo_before, odoo_after, "compute_bridge_call_duration_seconds_count" + call) == (
        CLICKS + 1)
    assert delta(odoo_before, odoo_after, "compute_bridge_call_failures_total"
                 '{kind="invalid_operands",method="method",service="compute"}') == 1
    entry = '{entrypoint="method",service="compute"}'
    assert delta(services_before, services_after, "nameko_entrypoint_calls_total" + entry) == (
        CLICKS + 1)
    assert delta(services_before, services_after,
                 "nameko_entrypoint_duration_seconds_count" + entry) == CLICKS + 1
    assert delta(services_before, services_after, "nameko_entrypoint_errors_total"
                 '{entrypoint="method",exc_type="InvalidOperand",service="compute"}') == 1
    assert services_after['nameko_workers_in_use{service="compute"}'] == 0
    # the clicks were served by several workers, and the endpoint summed them all
    with open(server.output) as handle:
        pids = {match.group(1) for match in map(ODOO_LOG_LINE.match, handle) if match}
    assert len(pids) > 1, "all the clicks were served by one worker: %s" % pids


def test_a_removed_metrics_directory_breaks_no_call(nameko_run, wait_for_compute, odoo,
                                                    odoo_database):
    nameko_run()
    wait_for_compute()
    # workers recycled after every RECYCLE_REQUESTS requests: new processes open new files
    server = odoo("--limit-request=%d" % RECYCLE_REQUESTS)
    client = Client(server)
    client.click_suma(1, 1)
    metrics_root = os.path.join(odoo_database[3], "data", "compute_bridge_metrics")
    assert glob.glob(os.path.join(metrics_root, "**", "*.db"), recursive=True)
    shutil.rmtree(metrics_root)

    for number in range(RECYCLED_CLICKS):
        Client(server).click_suma(number, 1)
    for _worker in range(WORKERS):
        values = scrape(server.url + "/compute_bridge/metrics", TOKEN)
        assert 'compute_bridge_service_instances{state="live"}' in values


def test_a_wrong_multiproc_dir_turns_metrics_off_and_odoo_loads(nameko_run, wait_for_compute,
                                                                odoo, tmp_path):
    nameko_run()
    wait_for_compute()
    missing = str(tmp_path / "no-such-directory")
    server = odoo(PROMETHEUS_MULTIPROC_DIR=missing)
    Client(server).click_suma(20, 22)
    response = requests.get(server.url + "/compute_bridge/metrics",
                            headers={"Authorization": "Bearer %s" % TOKEN}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 404
    with open(server.output) as handle:
        log = handle.read()
    assert "compute_bridge metrics are off: their directory %s cannot be used" % missing in log
    assert "Traceback" not in log


def test_a_silent_collector_keeps_the_services_from_stopping_in_no_time(nameko_run,
                                                                      wait_for_compute):
    # accepts connections (the kernel's backlog) and never reads nor answers
    with socket.create_server(("127.0.0.1", 0)) as silent:
        services = nameko_run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:%d"
                              % silent.getsockname()[1], OTEL_BSP_SCHEDULE_DELAY="100")
        wait_for_compute()  # spans to export, sent 100 ms later: no answer comes
        services.terminate()
        try:
            services.proc.wait(DOCKER_STOP_GRACE)
        except subprocess.TimeoutExpired:
            pytest.fail("nameko run still running %ss after SIGTERM: Docker would kill it"
                        % DOCKER_STOP_GRACE)


def test_requests_refused_before_a_worker_runs_are_counted(nameko_run, wait_for_compute,
                                                           amqp_uri):
    from nameko.exceptions import IncorrectSignature, MethodNotFound
    from nameko.standalone.rpc import ClusterRpcProxy

    health_port = free_port()
    nameko_run(WEB_SERVER_ADDRESS="127.0.0.1:%d" % health_port)
    wait_for_compute()
    url = "http://127.0.0.1:%d/metrics" % health_port
    before = scrape(url)
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=HTTP_TIMEOUT) as cluster:
        with pytest.raises(IncorrectSignature):
            cluster.compute.method(1)
        with pytest.raises(MethodNotFound):
            cluster.compute.nonexistent(1, 2)
    after = scrape(url)
    errors = 'nameko_entrypoint_errors_total{entrypoint="%s",exc_type="%s",service="compute"}'
    assert delta(before, after, errors % ("method", "IncorrectSignature")) == 1
    assert delta(before, after, errors % ("(unknown)", "MethodNotFound")) == 1
    calls = 'nameko_entrypoint_calls_total{entrypoint="%s",service="compute"}'
    assert delta(before, after, calls % "method") == 1
    assert delta(before, after, calls % "(unknown)") == 1

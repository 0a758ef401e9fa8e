"""Metrics and tracing of the bridge's calls, Odoo side: prometheus-client and OpenTelemetry.

Metrics, prefork-safe: prometheus-client's multiprocess mode. Each Odoo process (threaded server,
prefork worker, cron worker) writes its counters and histograms to memory-mapped files in one
directory per server start,
``<data_dir>/compute_bridge_metrics/<host>-<pid namespace>/<server pid>-<start time>``; a scrape,
served by whichever worker gets it, sums the files of every process, so the figures are those of
the whole server, workers recycled since its start included. The directory is set
(``PROMETHEUS_MULTIPROC_DIR``) before prometheus_client is first imported, which is why this
module is imported first by the addon. A server removes only the directories of servers of its
own host and PID namespace whose process is gone: a pid means nothing in another namespace (in
containers sharing a data_dir every Odoo is pid 1), so the directories of other hosts and
namespaces are left alone. Metrics never break a call: a metrics error is logged once and that
call goes uncounted. A directory removed under a running server is created again by a scrape;
the processes running then keep writing to their open files, now gone, until they restart.
The gauges that describe the database (background backlog, service instances) are read from it
at each scrape rather than kept by a process.

Tracing: every HTTP request Odoo dispatches runs in a span (models/ir_http.py), continuing the
request's W3C ``traceparent`` header if it has one; each call to a service is a child span whose
``traceparent`` travels in the request's AMQP headers (rpc/telemetry.py) to the services. While
a span is current, Odoo's log lines end with ``trace_id=<32 hex>``. Spans are exported over
OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set.

Switches (environment, read at server start): ``COMPUTE_BRIDGE_METRICS=0`` and
``COMPUTE_BRIDGE_TRACING=0`` turn either off.
"""

import contextlib
import logging
import os
import random
import shutil
import socket

import psutil

from .rpc import errors
from .rpc import telemetry as rpc_telemetry
from .rpc.client import idle_connections

_logger = logging.getLogger(__name__)

METRICS_ENV_VAR = "COMPUTE_BRIDGE_METRICS"
TRACING_ENV_VAR = "COMPUTE_BRIDGE_TRACING"
OFF_VALUES = frozenset({"0", "false", "no", "off"})
MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
METRICS_DIR_NAME = "compute_bridge_metrics"
# Linux: this process's PID namespace, whose inode number names it on this host.
PID_NAMESPACE_PATH = "/proc/self/ns/pid"
OTLP_ENDPOINT_ENV_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Seconds one export of spans may take, retries included (the SDK's default is 10): a collector
# that accepts connections and never answers then delays a stop, which drains the spans left,
# by a few seconds, within Docker's 10 s grace before SIGKILL.
OTLP_EXPORT_TIMEOUT = 2
TRACER_NAME = "compute_bridge"
SERVICE_NAME = "odoo"  # OpenTelemetry's service.name of the spans Odoo exports

# Call latencies: a call on a warm connection takes about a millisecond, a timeout seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
OUTCOME_OK, OUTCOME_FAILED = "ok", "failed"
# What went wrong, as a metric label: most specific class first (InvalidBrokerUrl is a
# BrokerUnreachable).
FAILURE_KINDS = (
    (errors.InvalidBrokerUrl, "invalid_broker_url"),
    (errors.BrokerUnreachable, "broker_unreachable"),
    (errors.ServiceUnavailable, "service_unavailable"),
    (errors.ServiceTimeout, "timeout"),
    (errors.InvalidOperands, "invalid_operands"),
    (errors.RemoteFailure, "remote_error"),
)
OTHER_FAILURE = "other"
TRACE_ID_BITS, SPAN_ID_BITS = 128, 64  # W3C Trace Context


def _enabled(env_var):
    return os.environ.get(env_var, "").strip().lower() not in OFF_VALUES


METRICS_ON = _enabled(METRICS_ENV_VAR)
TRACING_ON = _enabled(TRACING_ENV_VAR)


def failure_kind(error):
    """The metric label of ``error``.

    >>> failure_kind(errors.ServiceTimeout(service="compute", method="m", timeout=1, broker="b"))
    'timeout'
    """
    for error_class, kind in FAILURE_KINDS:
        if isinstance(error, error_class):
            return kind
    return OTHER_FAILURE


# --- metrics directory ------------------------------------------------------------------------
def _process_tag(pid):
    """``<pid>-<start time>``: a pid alone comes back (in a container Odoo is always pid 1)."""
    try:
        return "%d-%d" % (pid, psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _server_pid():
    """The pid of the Odoo server this process belongs to: the prefork master in its workers
    (they inherit its server object), this process otherwise (threaded server, tests, shell)."""
    from odoo.service import server

    return getattr(server.server, "pid", None) or os.getpid()


def metrics_root():
    # imported here: benchmarks/run.py loads this module without Odoo (PROMETHEUS_MULTIPROC_DIR
    # set, so this is not called)
    from odoo.tools import config

    return os.path.join(config["data_dir"], METRICS_DIR_NAME)


def namespace_id():
    """``<host name>-<PID namespace inode>``: where a pid means one process. The host name tells
    machines sharing a data_dir apart, the namespace containers of one machine (they may share
    a host name)."""
    try:
        namespace = os.stat(PID_NAMESPACE_PATH).st_ino
    except OSError:  # not Linux: the host name alone
        return socket.gethostname()
    return "%s-%d" % (socket.gethostname(), namespace)


def prepare_metrics_dir():
    """Set PROMETHEUS_MULTIPROC_DIR to this server start's directory (unless the operator set
    it), created empty at the start, and remove the directories of this namespace's servers
    that are gone."""
    if os.environ.get(MULTIPROC_ENV_VAR):
        return os.environ[MULTIPROC_ENV_VAR]
    root = os.path.join(metrics_root(), namespace_id())
    tag = _process_tag(_server_pid()) or str(os.getpid())
    path = os.path.join(root, tag)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(root):
        pid = name.partition("-")[0]
        if name != tag and pid.isdigit() and _process_tag(int(pid)) != name:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    os.environ[MULTIPROC_ENV_VAR] = path
    return path


def start_metrics():
    """This process's Metrics, or None (metrics off, with a warning) when the directory cannot
    be used, so that a wrong PROMETHEUS_MULTIPROC_DIR never keeps Odoo from loading."""
    try:
        prepare_metrics_dir()
        return Metrics()
    except OSError as error:
        _logger.warning("compute_bridge metrics are off: their directory %s cannot be used (%s);"
                        " set %s to an existing directory or leave it unset",
                        os.environ.get(MULTIPROC_ENV_VAR), error, MULTIPROC_ENV_VAR)
        return None


def forget_dead_processes():
    """Drop the live gauges of processes that ended (recycled workers): their counters and
    histograms stay, since the server's totals include what they did."""
    from prometheus_client import multiprocess

    path = os.environ[MULTIPROC_ENV_VAR]
    if not os.path.isdir(path):
        # removed under the running server: the processes that start from now on count again
        _logger.warning("compute_bridge metrics directory %s was removed; created again (the"
                        " counts of the running processes are lost)", path)
        os.makedirs(path, exist_ok=True)
    pids = set()
    for name in os.listdir(path):
        if name.startswith("gauge_live") and name.endswith(".db"):
            pid = name.rpartition("_")[2][:-len(".db")]
            if pid.isdigit():
                pids.add(int(pid))
    for pid in pids:
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, path)


class Metrics:
    """The bridge's metric objects; created once per process, after prepare_metrics_dir."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.calls = Counter(
            "compute_bridge_calls", "Requests sent to the services, by outcome.",
            ["service", "method", "outcome"])
        self.failures = Counter(
            "compute_bridge_call_failures", "Failed requests, by kind of failure.",
            ["service", "method", "kind"])
        self.not_sent = Counter(
            "compute_bridge_calls_not_sent",
            "Background requests held back, not sent: the service had no consumer, or the"
            " broker could not be reached (they stay queued and are sent later).",
            ["service", "method"])
        self.duration = Histogram(
            "compute_bridge_call_duration_seconds",
            "Time from sending a request to reading its reply.",
            ["service", "method"], buckets=LATENCY_BUCKETS)
        self.connections = Gauge(
            "compute_bridge_pool_connections",
            "AMQP connections of the RPC pool: idle, or in use by a call.",
            ["state"], multiprocess_mode="livesum")
        self.in_use = self.connections.labels("in_use")
        self.idle = self.connections.labels("idle")
        self.idle_now = None
        # (service, method) -> the series every successful call writes: labels() takes a lock
        # and builds a key at each use (prometheus-client keeps every label set anyway)
        self.ok_calls = {}
        self.durations = {}

    @staticmethod
    def _series(cache, metric, service, method, *labels):
        series = cache.get((service, method))
        if series is None:
            series = cache[service, method] = metric.labels(service, method, *labels)
        return series

    def set_idle(self, count):
        # written only when it changes: each write is a locked write to the metrics file
        if count != self.idle_now:
            self.idle_now = count
            self.idle.set(count)

    def record(self, service, method, outcomes, error):
        if error is not None:
            kind = failure_kind(error)
            count = len(outcomes)
            self.calls.labels(service, method, OUTCOME_FAILED).inc(count)
            self.failures.labels(service, method, kind).inc(count)
            return
        ok = 0
        for outcome in outcomes:
            if outcome.duration_ms:  # 0: never sent, or its broker lost: no latency to tell
                self._series(self.durations, self.duration, service, method).observe(
                    outcome.duration_ms / 1000.0)
            if outcome.error is None:
                ok += 1
            else:
                self.failures.labels(service, method, failure_kind(outcome.error)).inc()
        if ok:
            self._series(self.ok_calls, self.calls, service, method, OUTCOME_OK).inc(ok)
        if ok < len(outcomes):
            self.calls.labels(service, method, OUTCOME_FAILED).inc(len(outcomes) - ok)


# --- tracing ----------------------------------------------------------------------------------
def setup_tracing():
    """This process's OpenTelemetry tracer provider: spans always get ids (for the log lines and
    the services); they are exported only when an OTLP endpoint is configured."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if not any(os.environ.get(name) for name in OTLP_ENDPOINT_ENV_VARS):
        return IdsOnlyTracer()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME_KEY: SERVICE_NAME}))
    # BatchSpanProcessor restarts its export thread in a forked child (prefork workers).
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(timeout=OTLP_EXPORT_TIMEOUT),
        export_timeout_millis=OTLP_EXPORT_TIMEOUT * 1000))
    trace.set_tracer_provider(provider)
    return trace.get_tracer(TRACER_NAME)


class IdsOnlyTracer:
    """The tracer used while no span is exported: spans that are only ids (OpenTelemetry's
    NonRecordingSpan), enough for the log lines' trace ids and for the traceparent passed on,
    at a small part of the SDK's cost per span. Same calls as an OpenTelemetry tracer."""

    def start_span(self, name, context=None, kind=None, attributes=None):
        from opentelemetry import trace

        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else random.getrandbits(TRACE_ID_BITS)
        flags = parent.trace_flags if parent.is_valid else trace.TraceFlags.SAMPLED
        return trace.NonRecordingSpan(trace.SpanContext(
            trace_id, random.getrandbits(SPAN_ID_BITS), is_remote=False, trace_flags=flags))

    @contextlib.contextmanager
    def start_as_current_span(self, name, context=None, kind=None, attributes=None):
        from opentelemetry import trace

        with trace.use_span(self.start_span(name, context), end_on_exit=True) as span:
            yield span


def current_trace_id():
    """The 32-hex trace id of the current span, or None."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def current_traceparent():
    """The W3C ``traceparent`` of the current span, or None (tracing off, no span): what a
    background call keeps, to be sent in the trace of the click that queued it."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return traceparent(context) if context.is_valid else None


def traceparent(span_context):
    """The W3C ``traceparent`` of a span: what OpenTelemetry's TraceContextTextMapPropagator
    writes, without the context objects it builds on the way (this runs for every call)."""
    return "00-%032x-%016x-%02x" % (span_context.trace_id, span_context.span_id,
                                    span_context.trace_flags)


class TraceIds(logging.Formatter):
    """Wraps a handler's formatter: each line written while a span is current ends with
    ` trace_id=<32 hex>`. The record itself is left alone (other handlers, tests' captures)."""

    def __init__(self, formatter=None):
        super().__init__()
        self.formatter = formatter or logging.Formatter()

    def format(self, record):
        text = self.formatter.format(record)
        trace_id = current_trace_id()
        return "%s trace_id=%s" % (text, trace_id) if trace_id else text


def log_trace_ids():
    """Wrap the formatters of the root logger's handlers (Odoo's) in TraceIds (once)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, TraceIds):
            handler.setFormatter(TraceIds(handler.formatter))


@contextlib.contextmanager
def request_span(name, headers):
    """A server span for one HTTP request, continuing its ``traceparent`` header if any."""
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    traceparent = headers.get("traceparent")
    parent = (TraceContextTextMapPropagator().extract({"traceparent": traceparent})
              if traceparent else None)
    with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
        yield span


class BridgeObserver(rpc_telemetry.CallObserver):
    """Counts and traces each call of rpc.call_many (installed at import).

    A metrics error never reaches the call: it is logged (a warning the first time in this
    process, then at debug level) and that call goes uncounted."""

    def __init__(self, metrics, tracer):
        self.metrics = metrics
        self.tracer = tracer
        self.metrics_failed = False

    def _count(self, update, *args):
        """update(*args); False when the metrics failed."""
        try:
            update(*args)
        except Exception as error:  # noqa: BLE001 - metrics never break a call
            log = _logger.debug if self.metrics_failed else _logger.warning
            log("compute_bridge metrics failed, the call goes on uncounted: %r", error)
            self.metrics_failed = True
            return False
        return True

    def call_started(self, service, method, count):
        span = None
        if self.tracer is not None:
            from opentelemetry.trace import SpanKind

            span = self.tracer.start_span("%s.%s" % (service, method), kind=SpanKind.CLIENT,
                                          attributes={"rpc.service": service,
                                                      "rpc.method": method})
        counted = self.metrics is not None and self._count(self.metrics.in_use.inc)
        return service, method, count, span, counted

    def message_headers(self, started):
        span = started[3]
        if span is None:
            return None
        return {rpc_telemetry.TRACEPARENT_HEADER: traceparent(span.get_span_context())}

    def _call_ended_metrics(self, service, method, outcomes, error):
        self.metrics.record(service, method, outcomes, error)
        self.metrics.in_use.dec()
        self.metrics.set_idle(idle_connections())

    def _call_not_sent_metrics(self, service, method, count):
        self.metrics.not_sent.labels(service, method).inc(count)
        self.metrics.in_use.dec()

    def call_not_sent(self, started, error):
        service, method, count, span, counted = started
        if counted:
            self._count(self._call_not_sent_metrics, service, method, count)
        if span is not None:
            span.set_attribute("compute_bridge.not_sent", str(error))
            span.end()

    def call_ended(self, started, outcomes=None, error=None):
        service, method, count, span, counted = started
        if counted:
            self._count(self._call_ended_metrics, service, method, outcomes or [None] * count,
                        error)
        if span is not None:
            if error is not None:
                span.record_exception(error)
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()


_tracer = None
metrics = None


def tracer():
    """This process's tracer, or None when tracing is off."""
    return _tracer


def setup():
    """Once per process, at the addon's import."""
    global _tracer, metrics
    if METRICS_ON:
        metrics = start_metrics()
    if TRACING_ON:
        _tracer = setup_tracing()
        log_trace_ids()
    if metrics is not None or _tracer is not None:
        rpc_telemetry.set_observer(BridgeObserver(metrics, _tracer))


# --- exposition -------------------------------------------------------------------------------
def database_families(env):
    """Gauges read from the database at each scrape: the same answer from every worker."""
    from prometheus_client.core import GaugeMetricFamily

    families = []
    instances = GaugeMetricFamily(
        "compute_bridge_service_instances",
        "Service instances (nameko run processes) by state, from their heartbeats.",
        labels=["state"])
    model = env["compute.service.instance"].sudo()
    for state, _label in model._fields["state"].selection:
        instances.add_metric([state], model.search_count([("state", "=", state)]))
    families.append(instances)

    # every state, with 0 for those without a row: a missing series is a gap in a chart
    operations = GaugeMetricFamily(
        "compute_bridge_operations", "Compute operations by state.", labels=["state"])
    _add_counts_by_state(env, operations, "compute.operation")
    families.append(operations)

    backlog = GaugeMetricFamily(
        "compute_bridge_background_calls", "Background calls by state.", labels=["state"])
    _add_counts_by_state(env, backlog, "compute.bridge.call")
    families.append(backlog)
    env.cr.execute(
        "SELECT EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC')"
        " - min(coalesce(queued_at, create_date)))"
        " FROM compute_bridge_call WHERE state = 'queued'")
    age = env.cr.fetchone()[0]
    families.append(GaugeMetricFamily(
        "compute_bridge_background_oldest_queued_seconds",
        "Age of the oldest queued background call (0: none queued).",
        value=float(age or 0.0)))
    return families


def _add_counts_by_state(env, family, model_name):
    model = env[model_name].sudo()
    counts = dict(model._read_group([], ["state"], ["__count"]))
    for state, _label in model._fields["state"].selection:
        family.add_metric([state], counts.get(state, 0))


class _Families:
    """A collector that yields families built beforehand."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def exposition(env):
    """The text a scrape returns: every process's metrics, summed, and the database gauges."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    forget_dead_processes()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_Families(database_families(env)))
    return generate_latest(registry)

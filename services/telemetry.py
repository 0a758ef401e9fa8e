"""Metrics (prometheus-client) and tracing (OpenTelemetry) of a `nameko run` process.

Every service container of the process counts into prometheus-client's default registry, which
GET /metrics (services/health.py) exposes on the /health port: one registry per process, however
many services it runs. The dependency providers that count and trace each worker are in
services/dependencies.py (EntrypointMetrics, Tracing).

Tracing: a worker continues the W3C `traceparent` its caller put in the message's context data
(the AMQP header `nameko.traceparent`, which compute_bridge sends and nameko copies into
worker_ctx.context_data) and replaces it with its own span's, so that the calls and events the
worker makes carry it on (nameko propagates context data). While a span is current, log lines
end with `trace_id=<32 hex>`. Spans are exported over OTLP/HTTP only when
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.

Switches (environment): COMPUTE_BRIDGE_METRICS=0 and COMPUTE_BRIDGE_TRACING=0 turn either off.
"""

import contextlib
import logging
import os
import random
import sys

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

METRICS_ENV_VAR = "COMPUTE_BRIDGE_METRICS"
TRACING_ENV_VAR = "COMPUTE_BRIDGE_TRACING"
OFF_VALUES = frozenset({"0", "false", "no", "off"})
OTLP_ENDPOINT_ENV_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Seconds one export of spans may take, retries included (the SDK's default is 10): a collector
# that accepts connections and never answers then delays a stop, which drains the spans left,
# by a few seconds, within Docker's 10 s grace before SIGKILL.
OTLP_EXPORT_TIMEOUT = 2
TRACER_NAME = "compute_bridge.services"
# OpenTelemetry's service.name of the spans a `nameko run` process exports
OTEL_SERVICE_NAME = "nameko"
# context_data keys: one traceparent per worker, or one per message of a batched event
TRACEPARENT_KEY = "traceparent"
TRACEPARENTS_KEY = "traceparents"
TRACEPARENTS_HEADER = "nameko." + TRACEPARENTS_KEY

# An RPC served on a warm connection takes well under a millisecond of work.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


def _enabled(env_var):
    return os.environ.get(env_var, "").strip().lower() not in OFF_VALUES


METRICS_ON = _enabled(METRICS_ENV_VAR)
TRACING_ON = _enabled(TRACING_ENV_VAR)

# The *_created series (when each label set first appeared) only double what a scrape carries.
disable_created_metrics()

CALLS = Counter("nameko_entrypoint_calls",
                "Requests served, by service and entrypoint (those refused before a worker ran"
                " included).",
                ["service", "entrypoint"])
ERRORS = Counter("nameko_entrypoint_errors",
                 "Workers that raised and requests refused before a worker ran, by exception type.",
                 ["service", "entrypoint", "exc_type"])
DURATION = Histogram("nameko_entrypoint_duration_seconds",
                     "Time a worker took, from its setup to its result.",
                     ["service", "entrypoint"], buckets=LATENCY_BUCKETS)
WORKERS_IN_USE = Gauge("nameko_workers_in_use", "Workers running now, by service.", ["service"])
MAX_WORKERS = Gauge("nameko_max_workers", "Size of each service's worker pool.", ["service"])
HEARTBEAT_VIA_EVENT, HEARTBEAT_VIA_HTTP = "event", "http"
HEARTBEATS = Counter("nameko_heartbeats",
                     "Heartbeats this process has sent, by way: the nameko event (published), the"
                     " POST to HEARTBEAT_URL (answered 2xx).", ["via"])
HEARTBEAT_FAILURES = Counter("nameko_heartbeat_failures",
                             "Heartbeats not sent, by way: broker not reached or publish failed;"
                             " monitor refused, failed or silent.", ["via"])

TRACE_ID_BITS, SPAN_ID_BITS = 128, 64  # W3C Trace Context
# The entrypoint label of a request for a method the service does not have: a fixed value, so
# that callers cannot add label values at will.
UNKNOWN_ENTRYPOINT = "(unknown)"

_tracer = None


def tracer():
    """This process's tracer, or None when tracing is off."""
    return _tracer


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


class RejectedRequestMetrics:
    """Mixed into nameko's RpcConsumer: counts the requests nameko answers with an error before
    any worker runs (MethodNotFound, IncorrectSignature, MalformedRequest) as calls and errors by
    exception type; EntrypointMetrics (services/dependencies.py) counts the workers."""

    def handle_message(self, body, message):
        # nameko's RpcConsumer.handle_message, counting the requests it rejects
        provider = None
        try:
            provider = self.get_provider_for_method(message.delivery_info["routing_key"])
            provider.handle_message(body, message)
        except Exception:  # noqa: BLE001 - as nameko: the error is the caller's reply
            exc_info = sys.exc_info()
            self.count_refused(provider, exc_info[0].__name__)
            self.handle_result(message, None, exc_info)

    def count_refused(self, provider, exc_type):
        """Count a request refused before any worker ran, as a call and an error of
        ``exc_type``, under its provider's method (None: a method the service does not have)."""
        if METRICS_ON:
            service = self.container.service_name
            entrypoint = provider.method_name if provider is not None else UNKNOWN_ENTRYPOINT
            CALLS.labels(service, entrypoint).inc()
            ERRORS.labels(service, entrypoint, exc_type).inc()


def setup():
    """Once per process, when the services are imported."""
    global _tracer
    if not TRACING_ON:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    if any(os.environ.get(name) for name in OTLP_ENDPOINT_ENV_VARS):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: OTEL_SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(timeout=OTLP_EXPORT_TIMEOUT),
            export_timeout_millis=OTLP_EXPORT_TIMEOUT * 1000))
        trace.set_tracer_provider(provider)
        _tracer = trace.get_tracer(TRACER_NAME)
    else:
        _tracer = IdsOnlyTracer()
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, TraceIds):
            handler.setFormatter(TraceIds(handler.formatter))


def parent_context(traceparent):
    """The OpenTelemetry context a W3C `traceparent` names (None for none; junk is ignored).

    It comes from an AMQP header, which anyone who may publish can set to any value.

    >>> parent_context(123) is None
    True
    """
    if not traceparent or not isinstance(traceparent, str):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({TRACEPARENT_KEY: traceparent})


def traceparent_of(span):
    """The W3C `traceparent` of a span: what OpenTelemetry's TraceContextTextMapPropagator
    writes, without the context objects it builds on the way (this runs for every worker)."""
    context = span.get_span_context()
    return "00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)

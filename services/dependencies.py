"""The services' dependency providers: what a worker is given besides its arguments.

- Notifier: compute's way to tell notify, off the caller's round trip.
- Registration: lists a service container among those this process runs.
- BrokerCheck: whether this instance reaches its broker now, bounded in time.
- Monitor: the heartbeat's settings, its log lines and its POST to the monitor (Odoo).
- EntrypointMetrics: counts, times and sizes each worker (Prometheus, services/telemetry.py).
- Tracing: runs each worker in an OpenTelemetry span that continues its caller's trace.
"""

import contextlib
import datetime
import json
import logging
import time

import eventlet
import requests
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
)
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.rpc import ServiceProxy

from services import instance, telemetry
from services.entrypoints import WatchedReplyListener
from services.logs import FAILOVER_SEPARATOR, masked_url, without_password
from services.settings import (
    HEARTBEAT_SECRET_KEY,
    HEARTBEAT_URL_KEY,
    NOTIFY_VIA_RPC,
    heartbeat_interval,
    notify_via,
    setting,
)

_logger = logging.getLogger(__name__)

# Where Notifier sends: the notify service's rpc `send`, or this event (payload: a list of
# messages) dispatched by the service that holds the Notifier.
NOTIFY_SERVICE_NAME = "notify"
OPERATIONS_COMPLETED_EVENT = "operations_completed"

# Event mode batches the notifications: one event carries the messages of up to this many
# calls, or of what completed in this many seconds after the first one, whichever comes first,
# so that a burst costs one publish (and one notify worker) per batch rather than per call.
NOTIFY_BATCH_MAX = 100
NOTIFY_BATCH_SECONDS = 0.05

# A broker check that has not connected within this many seconds counts as "not connected";
# the hard cap bounds DNS, connect and the AMQP handshake together.
BROKER_CHECK_TIMEOUT = 2.0
BROKER_CHECK_DEADLINE = BROKER_CHECK_TIMEOUT + 0.5
# A check stands for this many heartbeat intervals (the checks' pace): one beat may be late,
# two missed mean the checks stopped, and the broker state is unknown.
BROKER_CHECK_VALID_INTERVALS = 2

SECRET_HEADER = "X-Heartbeat-Secret"
# A monitor that does not answer within this many seconds is skipped until the next beat: the
# POST runs in the timer's worker, and a beat must never wait long on someone else's server.
MONITOR_TIMEOUT = 2.0
# Hard cap on the whole POST (DNS, connect, send, read), which requests' timeout alone is not.
MONITOR_DEADLINE = MONITOR_TIMEOUT + 0.5
# Every beat is logged at DEBUG; at INFO, the first one and then a summary this often (seconds).
HEARTBEAT_SUMMARY_SECONDS = 600


class Notifier(EventDispatcher):
    """Tells the notify service a message, without making compute's caller wait for it.

    The worker only records the message; it is sent in `worker_result`, which nameko runs
    after the RPC reply has been published, so the notify hop is off the caller's round trip.
    Both ways of telling notify are offered (NOTIFY_VIA):

    - "event" (default): messages are batched (NOTIFY_BATCH_MAX, NOTIFY_BATCH_SECONDS) and sent
      as one OPERATIONS_COMPLETED_EVENT whose payload is the list of messages;
    - "rpc": the blog post's `notify_rpc.send.call_async(message)`, one per message.

    A failure to notify is logged and never turns a computed sum into an error.

    It is an EventDispatcher (nameko cannot nest one DependencyProvider in another) and builds
    its rpc proxy the way nameko's RpcProxy does, from a shared ReplyListener.
    """

    rpc_reply_listener = WatchedReplyListener()

    def __init__(self, **publisher_options):
        # A notification is a log line: not worth a disk write on the broker, nor a wait for the
        # broker's publish confirm. A lost connection still raises, and is logged.
        publisher_options.setdefault("delivery_mode", NON_PERSISTENT)
        publisher_options.setdefault("use_confirms", False)
        super().__init__(**publisher_options)

    def setup(self):
        super().setup()
        self.via = notify_via(self.container.config)
        self._pending = {}
        self._batch = []
        self._flush_scheduled = False

    def get_dependency(self, worker_ctx):
        def notify(message):
            # with the worker's traceparent: the event batches many workers' messages
            self._pending.setdefault(worker_ctx, []).append(
                (message, worker_ctx.context_data.get(telemetry.TRACEPARENT_KEY) or ""))

        return notify

    def send_now(self, worker_ctx, message):
        """The rpc way, one message."""
        notify_rpc = ServiceProxy(worker_ctx, NOTIFY_SERVICE_NAME, self.rpc_reply_listener)
        notify_rpc.send.call_async(message)

    def send_batch(self, messages, traceparents=()):
        """The event way, one event for many messages; the header `nameko.traceparents` says
        which trace each message belongs to (notify logs each in its own)."""
        headers = {telemetry.TRACEPARENTS_HEADER: list(traceparents)} if any(traceparents) else {}
        self.publisher.publish(
            messages, exchange=self.exchange, routing_key=OPERATIONS_COMPLETED_EVENT,
            headers=headers)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        messages = self._pending.pop(worker_ctx, ())
        if self.via == NOTIFY_VIA_RPC:
            for message, _traceparent in messages:
                try:
                    self.send_now(worker_ctx, message)
                except Exception as error:  # noqa: BLE001 - the sum is delivered; keep the worker
                    _logger.warning("could not notify %r via rpc: %s", message, error)
            return
        self._batch.extend(messages)
        if len(self._batch) >= NOTIFY_BATCH_MAX:
            self.flush()
        elif self._batch and not self._flush_scheduled:
            self._flush_scheduled = True
            self.container.spawn_managed_thread(self._flush_later)

    def _flush_later(self):
        try:
            eventlet.sleep(NOTIFY_BATCH_SECONDS)
        finally:
            self._flush_scheduled = False
        self.flush()

    def flush(self):
        """Send the messages batched so far; never raises."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        messages, traceparents = zip(*batch, strict=True)
        try:
            self.send_batch(list(messages), traceparents)
        except Exception as error:  # noqa: BLE001 - the sums are already delivered
            _logger.warning("could not notify %d messages via event, first %r: %s",
                            len(batch), messages[0], error)

    def stop(self):
        # the container has waited for its workers: send what they left in the batch
        self.flush()
        super().stop()

    def worker_teardown(self, worker_ctx):
        # a worker that failed before worker_result must not leak its pending messages
        self._pending.pop(worker_ctx, None)


class Registration(DependencyProvider):
    """Lists its service container among those this process runs (heartbeats say which) while
    the container runs. nameko keeps no registry of a process's containers."""

    def start(self):
        instance.service_started(self.container.service_name)

    def stop(self):
        instance.service_stopped(self.container.service_name)

    kill = stop


class BrokerCheck(DependencyProvider):
    """check() -> whether this instance reaches its broker now: a fresh AMQP connection, with
    its handshake, opened and closed within BROKER_CHECK_DEADLINE.

    The queue consumers' own connections say when they are lost or back (WatchedQueueConsumer),
    but an idle connection to a broker that merely stopped answering looks alive for two AMQP
    heartbeats; a fresh connection fails at once then, as it does when the broker is stopped
    or refuses our credentials. The result is recorded for the whole process
    (instance.record_broker_check), where /health reads it, and every change is logged once.
    """

    def setup(self):
        self.valid_for = BROKER_CHECK_VALID_INTERVALS * heartbeat_interval(self.container.config)
        self.reached = None  # the last check's result; None before the first

    def get_dependency(self, worker_ctx):
        return self.check

    def check(self):
        config = self.container.config
        uri = config[AMQP_URI_CONFIG_KEY]
        was_reached = self.reached
        # kombu's failover form names the nodes of a cluster: the instance reaches its broker
        # when one of them answers, each within an equal share of the deadline.
        nodes = uri.split(FAILOVER_SEPARATOR)
        for node in nodes:
            failure = self._reach(node, config, BROKER_CHECK_DEADLINE / len(nodes))
            if failure is None:
                break
        if failure is not None:
            failure = without_password(failure, uri)
        reached = failure is None
        self.reached = reached
        instance.record_broker_check(reached, self.valid_for)
        if reached and not was_reached:
            _logger.info("broker %s: connected", masked_url(uri))
        elif not reached:
            # said once at WARNING when it starts, then at DEBUG until it ends
            _logger.log(logging.DEBUG if was_reached is False else logging.WARNING,
                        "broker %s: %s (%s)", masked_url(uri),
                        "connection lost" if was_reached else "not reached", failure)
        return reached


    @staticmethod
    def _reach(uri, config, deadline):
        """None when a connection to ``uri`` opens within ``deadline`` seconds, else why not."""
        connection = Connection(
            uri,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            connect_timeout=min(BROKER_CHECK_TIMEOUT, deadline),
        )
        try:
            with eventlet.Timeout(deadline):
                connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        except eventlet.Timeout:
            return "no answer within %gs" % deadline
        except connection.connection_errors as error:
            return str(error) or type(error).__name__
        finally:
            connection.release()
        return None


class Monitor(DependencyProvider):
    """The heartbeat's settings (nameko 2.x services have no config of their own, so they are
    read from the container's, the environment first), its log lines, and its POST to the
    monitor. The worker gets the provider itself: it keeps what the INFO summary needs."""

    def setup(self):
        config = self.container.config
        self.interval = heartbeat_interval(config)
        self.url = setting(config, HEARTBEAT_URL_KEY)
        self.secret = setting(config, HEARTBEAT_SECRET_KEY, "")
        if self.url and not self.secret:
            # the monitor (Odoo's endpoint) refuses a beat without the secret: say so once
            _logger.warning("%s is set but %s is not: the monitor will likely refuse the beats",
                            HEARTBEAT_URL_KEY, HEARTBEAT_SECRET_KEY)
        self.beats = 0
        self.summary_at = None  # time.monotonic() of the last INFO line
        self.calls_at_summary = 0

    def get_dependency(self, worker_ctx):
        return self

    def payload(self, service_name):
        """The beat: who this instance is and how it is doing."""
        beat = instance.identity(service_name)
        beat["interval"] = self.interval
        beat["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat()
        return beat

    def log(self, beat):
        """Each beat at DEBUG, as one line "heartbeat <JSON>"; at INFO the first one, then every
        HEARTBEAT_SUMMARY_SECONDS a summary."""
        _logger.debug("heartbeat %s", json.dumps(beat, sort_keys=True))
        self.beats += 1
        now = time.monotonic()
        if self.summary_at is None:
            _logger.info(
                "heartbeat: instance %s (pid %s) runs %s, beats every %ss, /health on port %s,"
                " broker connected: %s",
                beat["instance_id"], beat["pid"], ", ".join(beat["services"]), beat["interval"],
                beat["health_port"], beat["broker_connected"],
            )
        elif now - self.summary_at >= HEARTBEAT_SUMMARY_SECONDS:
            _logger.info(
                "heartbeat: %d beats in %ds, %d calls served (%d in all), broker connected: %s",
                self.beats, now - self.summary_at, beat["calls_served"] - self.calls_at_summary,
                beat["calls_served"], beat["broker_connected"],
            )
        else:
            return
        self.beats = 0
        self.summary_at = now
        self.calls_at_summary = beat["calls_served"]

    @staticmethod
    def count(via, sent):
        """A beat sent (or not) by the way `via` (metrics)."""
        (telemetry.HEARTBEATS if sent else telemetry.HEARTBEAT_FAILURES).labels(via).inc()

    def post(self, beat):
        """POST `beat` to HEARTBEAT_URL, if set; True if it answered 2xx. Never raises, never
        blocks long: a monitor that is down, slow or refusing costs a warning, nothing more."""
        if not self.url:
            return False
        posted = self._post(beat)
        self.count(telemetry.HEARTBEAT_VIA_HTTP, posted)
        return posted

    def _post(self, beat):
        headers = {SECRET_HEADER: self.secret} if self.secret else {}
        url = maybe_sanitize_url(self.url)
        try:
            with eventlet.Timeout(MONITOR_DEADLINE):
                response = requests.post(self.url, json=beat, headers=headers,
                                         timeout=MONITOR_TIMEOUT)
            response.raise_for_status()
        except eventlet.Timeout:
            _logger.warning("heartbeat monitor %s did not answer within %ss", url, MONITOR_DEADLINE)
            return False
        except Exception as error:  # noqa: BLE001 - whatever the monitor does, the beat goes on
            _logger.warning("heartbeat monitor %s failed: %s", url,
                            without_password(str(error), self.url))
            return False
        return True


class EntrypointMetrics(DependencyProvider):
    """Counts each worker of its service: calls, errors by exception type, duration, and the
    workers in use (services/telemetry.py); also the per-service calls the heartbeat reports."""

    def setup(self):
        self.started = {}
        self.service_name = self.container.service_name
        # entrypoint -> (calls, duration) series: labels() takes a lock and builds a key at
        # each use; the entrypoints are the service's own methods, so this stays small
        self.series = {}
        if telemetry.METRICS_ON:
            telemetry.MAX_WORKERS.labels(self.service_name).set(self.container.max_workers)
            self.workers_in_use = telemetry.WORKERS_IN_USE.labels(self.service_name)

    def worker_setup(self, worker_ctx):
        instance.count_entrypoint_call(self.service_name)
        if telemetry.METRICS_ON:
            self.workers_in_use.inc()
            self.started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self.started.pop(worker_ctx, None)
        if started is None:
            return
        entrypoint = worker_ctx.entrypoint.method_name
        series = self.series.get(entrypoint)
        if series is None:
            series = self.series[entrypoint] = (
                telemetry.CALLS.labels(self.service_name, entrypoint),
                telemetry.DURATION.labels(self.service_name, entrypoint))
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
        if exc_info is not None:
            telemetry.ERRORS.labels(self.service_name, entrypoint, exc_info[0].__name__).inc()

    def worker_teardown(self, worker_ctx):
        if telemetry.METRICS_ON:
            self.started.pop(worker_ctx, None)
            self.workers_in_use.dec()


class Tracing(DependencyProvider):
    """Runs each worker in a span continuing the caller's `traceparent` (context data), and
    gives the worker its own span's, which nameko passes on to the calls and events it makes.

    The worker gets message_span(position): a context manager in which the span of the trace of
    the message at `position` of a batched event (header `nameko.traceparents`) is current.
    """

    def setup(self):
        self.active = {}

    def worker_setup(self, worker_ctx):
        tracer = telemetry.tracer()
        if tracer is None:
            return
        from opentelemetry import context
        from opentelemetry.trace import SpanKind, set_span_in_context

        name = "%s.%s" % (self.container.service_name, worker_ctx.entrypoint.method_name)
        span = tracer.start_span(
            name, kind=SpanKind.SERVER,
            context=telemetry.parent_context(
                worker_ctx.context_data.get(telemetry.TRACEPARENT_KEY)))
        token = context.attach(set_span_in_context(span))
        # into worker_ctx.data: context_data is a copy made at each read, and data is what
        # nameko passes on to the calls and events this worker makes
        worker_ctx.data[telemetry.TRACEPARENT_KEY] = telemetry.traceparent_of(span)
        self.active[worker_ctx] = (span, token)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        if exc_info is not None and worker_ctx in self.active:
            from opentelemetry.trace import Status, StatusCode

            span = self.active[worker_ctx][0]
            span.record_exception(exc_info[1])
            span.set_status(Status(StatusCode.ERROR, exc_info[0].__name__))

    def worker_teardown(self, worker_ctx):
        span, token = self.active.pop(worker_ctx, (None, None))
        if span is not None:
            from opentelemetry import context

            context.detach(token)
            span.end()

    def get_dependency(self, worker_ctx):
        @contextlib.contextmanager
        def message_span(position):
            traceparents = worker_ctx.context_data.get(telemetry.TRACEPARENTS_KEY)
            if not isinstance(traceparents, (list, tuple)):  # an AMQP header: any value
                traceparents = ()
            traceparent = traceparents[position] if position < len(traceparents) else ""
            tracer = telemetry.tracer()
            if tracer is None or not traceparent:
                yield
                return
            with tracer.start_as_current_span("%s message" % self.container.service_name,
                                              context=telemetry.parent_context(traceparent)):
                yield

        return message_span

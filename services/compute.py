"""The compute service: adds two numbers and tells the notify service about it.

    n.rpc.compute.method(99999, 99999)  ->  199998
"""

import logging
import math

import eventlet
from nameko.constants import NON_PERSISTENT
from nameko.events import EventDispatcher
from nameko.rpc import ReplyListener, ServiceProxy

from services import instance
from services.entrypoints import rpc
from services.settings import setting

_logger = logging.getLogger(__name__)

SERVICE_NAME = "compute"
NOTIFY_SERVICE_NAME = "notify"
OPERATION_COMPLETED_EVENT = "operation_completed"  # one message (sent by earlier versions)
OPERATIONS_COMPLETED_EVENT = "operations_completed"  # a list of messages: what compute sends
OPERATION_COMPLETED_MESSAGE = "Operation completed %s"

# How compute tells notify: "event" (default: one fire-and-forget publish, no reply message) or
# "rpc" (the blog post's `notify_rpc.send.call_async(...)`: a request plus a reply nobody reads).
NOTIFY_VIA_KEY = "NOTIFY_VIA"
NOTIFY_VIA_EVENT = "event"
NOTIFY_VIA_RPC = "rpc"
NOTIFY_VIA_DEFAULT = NOTIFY_VIA_EVENT

# Event mode batches the notifications: one event carries the messages of up to this many
# calls, or of what completed in this many seconds after the first one, whichever comes first.
# Measured by benchmarks phase 4: one event per call cost ~25% of the services' CPU (dispatch
# on compute's side, a worker on notify's). Notify still logs one line per message.
NOTIFY_BATCH_MAX = 100
NOTIFY_BATCH_SECONDS = 0.05

# Long or hostile operands (megabyte strings, bidi controls) are quoted this short in errors.
MAX_REPR_LENGTH = 60


class InvalidOperand(ValueError):
    """An operand (or the sum) that compute refuses; the caller sees RemoteError 'InvalidOperand'.

    Raised instead of letting `+` fail or succeed oddly: "abc" + "def" would concatenate,
    True + 1 would be 2, NaN and inf would travel on as invalid JSON for most clients.
    """


def _describe(value):
    """repr() of `value`, cut short; repr escapes zero-width and bidi characters, so the error
    message shows them instead of letting them reorder or hide text in a log or a UI."""
    text = repr(value)
    if len(text) > MAX_REPR_LENGTH:
        text = text[:MAX_REPR_LENGTH] + "..."
    return "%s (%s)" % (text, type(value).__name__)


def check_operand(name, value):
    """Return `value` if it is a finite int or float, else raise InvalidOperand."""
    # bool is a subclass of int, but True + True == 2 is never what a caller meant.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOperand("%s must be a finite int or float, got %s" % (name, _describe(value)))
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidOperand("%s must be a finite int or float, got %s" % (name, _describe(value)))
    return value


def add(value1, value2):
    """value1 + value2 for finite ints and floats; InvalidOperand for anything else.

    Ints stay exact (Python ints have no size limit); a float sum that leaves the float range
    is refused rather than returned as inf.
    """
    check_operand("value1", value1)
    check_operand("value2", value2)
    try:
        total = value1 + value2
    except OverflowError:
        # an int too large for a float, added to a float
        raise InvalidOperand(
            "value1 + value2 is out of the float range: %s + %s"
            % (_describe(value1), _describe(value2))
        ) from None
    if isinstance(total, float) and not math.isfinite(total):
        raise InvalidOperand(
            "value1 + value2 overflows to infinity: %s + %s"
            % (_describe(value1), _describe(value2))
        )
    return total


class Notifier(EventDispatcher):
    """Tells the notify service a message, without making compute's caller wait for it.

    The worker only records the message; it is sent in `worker_result`, which nameko runs
    after the RPC reply has been published, so the notify hop is off the caller's round trip.
    Both ways of telling notify are offered (NOTIFY_VIA in config or environment):

    - "event" (default): messages are batched (NOTIFY_BATCH_MAX, NOTIFY_BATCH_SECONDS) and sent
      as one OPERATIONS_COMPLETED_EVENT whose payload is the list of messages;
    - "rpc": the blog post's `notify_rpc.send.call_async(message)`, one per message.

    A failure to notify is logged and never turns a computed sum into an error.

    It is an EventDispatcher (nameko cannot nest one DependencyProvider in another) and builds
    its rpc proxy the way nameko's RpcProxy does, from a shared ReplyListener.
    """

    rpc_reply_listener = ReplyListener()

    def __init__(self, **publisher_options):
        # A notification is a log line: not worth a disk write on the broker, nor a wait for the
        # broker's publish confirm (measured by tools/bench_notify_hop.py: ~1.8 ms per message
        # with confirms, ~1.0 ms without). A lost connection still raises, and is logged.
        publisher_options.setdefault("delivery_mode", NON_PERSISTENT)
        publisher_options.setdefault("use_confirms", False)
        super().__init__(**publisher_options)

    def setup(self):
        super().setup()
        self.via = str(setting(self.container.config, NOTIFY_VIA_KEY, NOTIFY_VIA_DEFAULT)).lower()
        if self.via not in (NOTIFY_VIA_EVENT, NOTIFY_VIA_RPC):
            _logger.warning(
                "%s=%r is neither %r nor %r; using %r",
                NOTIFY_VIA_KEY, self.via, NOTIFY_VIA_EVENT, NOTIFY_VIA_RPC, NOTIFY_VIA_DEFAULT,
            )
            self.via = NOTIFY_VIA_DEFAULT
        self._pending = {}
        self._batch = []
        self._flush_scheduled = False

    def get_dependency(self, worker_ctx):
        def notify(message):
            self._pending.setdefault(worker_ctx, []).append(message)

        return notify

    def send_now(self, worker_ctx, message):
        """The rpc way, one message."""
        notify_rpc = ServiceProxy(worker_ctx, NOTIFY_SERVICE_NAME, self.rpc_reply_listener)
        notify_rpc.send.call_async(message)

    def send_batch(self, messages):
        """The event way, one event for many messages."""
        self.publisher.publish(
            messages, exchange=self.exchange, routing_key=OPERATIONS_COMPLETED_EVENT)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        messages = self._pending.pop(worker_ctx, ())
        if self.via == NOTIFY_VIA_RPC:
            for message in messages:
                try:
                    self.send_now(worker_ctx, message)
                except Exception:  # noqa: BLE001 - the sum is already delivered; keep the worker
                    _logger.warning("could not notify %r via rpc", message, exc_info=True)
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
        try:
            self.send_batch(batch)
        except Exception:  # noqa: BLE001 - the sums are already delivered
            _logger.warning("could not notify %d messages via event, first %r",
                            len(batch), batch[0], exc_info=True)

    def stop(self):
        # the container has waited for its workers: send what they left in the batch
        self.flush()
        super().stop()

    def worker_teardown(self, worker_ctx):
        # a worker that failed before worker_result must not leak its pending messages
        self._pending.pop(worker_ctx, None)


class ComputeService:
    name = SERVICE_NAME

    notify = Notifier()

    # expected: logged as a warning without a traceback, since it is the caller's mistake
    @rpc(expected_exceptions=InvalidOperand)
    def method(self, value1, value2):
        instance.count_call()
        total = add(value1, value2)
        self.notify(OPERATION_COMPLETED_MESSAGE % total)
        return total

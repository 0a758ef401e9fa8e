"""Where metrics and tracing plug into a call, without this package knowing either library.

:func:`.client.call_many` tells the installed :class:`CallObserver` (none by default) when a
call starts and how it ended, and publishes each request with the AMQP headers the observer
gives: nameko reads every ``nameko.<key>`` header of a request into the worker's context data
and passes it on to the calls and events that worker makes, which is how a trace id travels
from the caller to ``compute`` and on to ``notify``. The Odoo side (``compute_bridge.telemetry``)
installs an observer that counts the calls with prometheus-client and traces them with
OpenTelemetry; a caller without one pays one attribute read per call.
"""

# nameko's prefix for the message headers it copies into a worker's context data
# (nameko.constants.HEADER_PREFIX; nameko itself is never imported here).
NAMEKO_HEADER_PREFIX = "nameko."
# The W3C Trace Context header, under that prefix: context_data["traceparent"] in the services.
TRACEPARENT_HEADER = NAMEKO_HEADER_PREFIX + "traceparent"


class CallObserver:
    """What an observer implements; every method must be quick and must not raise."""

    def call_started(self, service, method, count):
        """A batch of ``count`` requests starts; return what :meth:`call_ended` will be given."""
        return None

    def message_headers(self, started):
        """AMQP headers to add to each request of the batch ``started`` (None: none)."""
        return None

    def call_ended(self, started, outcomes=None, error=None):
        """The batch ended: one :class:`.client.CallOutcome` each, or ``error`` (a
        ``BridgeError`` or any exception) for the whole batch."""

    def call_not_sent(self, started, error):
        """The batch ended without a request sent, with ``require_consumer``: the service had
        no consumer (``error``, a ServiceUnavailable) or the broker could not be reached (a
        BrokerUnreachable); its caller sends it again later."""


_observer = None


def set_observer(observer):
    """Install ``observer`` (a :class:`CallObserver`) for this process; None removes it."""
    global _observer
    _observer = observer


def observer():
    return _observer

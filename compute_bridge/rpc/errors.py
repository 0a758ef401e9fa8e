"""What can go wrong when Odoo calls a Nameko service, and how failures are told apart.

Callers catch meaning, not library internals (amqp, kombu, nameko)::

    BridgeError                  anything below; str() is readable English, credentials masked
    ├── BrokerUnreachable        no usable AMQP connection (refused, DNS, auth, lost, no answer)
    │   └── InvalidBrokerUrl     the URL itself cannot name an AMQP broker (scheme, port, vhost)
    ├── ServiceUnavailable       the broker answered but no queue is bound for the service
    ├── ServiceTimeout           requests were sent but no reply came before the deadline
    │   └── RequestsNotAccepted  the broker refused them or never confirmed them (a queue
    │                            without its quorum)
    ├── InvalidOperands          the service refused the operands (remote ``InvalidOperand``)
    └── RemoteFailure            the service raised anything else

Each error also carries ``params``, a dict with exactly the keys of its class's ``PARAMS``, so a
caller can build its own (translated) message per class; ``str()`` is ``MESSAGE % params``.
``broker`` is always the masked URL (:func:`broker_label`) and ``detail`` is scrubbed of
the password (:func:`.config.scrub_password`): library errors may echo the URL.

>>> error = ServiceTimeout(service="compute", method="method", timeout=2.0,
...                        broker="pyamqp://guest:***@rabbit")
>>> print(error)  # doctest: +NORMALIZE_WHITESPACE
No reply from compute.method within 2 s (broker pyamqp://guest:***@rabbit): the service is
busy or not consuming its queue.
>>> sorted(error.params)
['broker', 'method', 'service', 'timeout']
"""

from .config import FAILOVER_SEPARATOR, mask_url, scrub_password

REMOTE_INVALID_OPERAND = "InvalidOperand"  # exc_type the compute service raises (its contract)
MAX_BROKER_LABEL = 200  # characters of a (masked) broker URL quoted in a message


def broker_label(url):
    """The broker URL as messages quote it: password masked, the nodes after the first of a
    failover list by their address only (the whole list would fill the message), cut short if
    absurdly long.

    >>> broker_label("pyamqp://u:secret@rabbit/" + "v" * 300)[-30:]
    'vvvvvvvvvvvvvvvvvvvvvvvvvvvvv…'
    >>> broker_label("pyamqp://u:secret@rabbit1/vh;pyamqp://u:secret@rabbit2:5673/vh")
    'pyamqp://u:***@rabbit1/vh, rabbit2:5673'
    """
    first, *others = url.split(FAILOVER_SEPARATOR)
    masked = ", ".join([mask_url(first)] + [_node_address(other) for other in others])
    return masked if len(masked) <= MAX_BROKER_LABEL else masked[:MAX_BROKER_LABEL - 1] + "…"


def _node_address(url):
    """``host:port`` of one broker URL (what follows its credentials, up to the path)."""
    address = url.strip().split("://", 1)[-1].rsplit("@", 1)[-1]
    return address.split("/", 1)[0]


class BridgeError(Exception):
    """Base class: a call to a Nameko service did not return a result."""

    PARAMS = ()
    MESSAGE = "%(detail)s"

    def __init__(self, **params):
        if set(params) != set(self.PARAMS):
            raise TypeError("%s takes exactly %s" % (type(self).__name__, self.PARAMS))
        self.params = params
        self.message = self.MESSAGE % params
        super().__init__(self.message)

    def __str__(self):
        return self.message


class BrokerUnreachable(BridgeError):
    """No AMQP connection to the broker (refused, unknown host, bad credentials, dropped, or no
    complete answer before the deadline)."""

    PARAMS = ("broker", "detail")
    MESSAGE = "Cannot reach the message broker at %(broker)s (%(detail)s)."

    @classmethod
    def from_exception(cls, broker_url, error):
        """The error for a library exception, its text scrubbed of ``broker_url``'s password."""
        detail = "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
        return cls(broker=broker_label(broker_url), detail=scrub_password(detail, broker_url))


class InvalidBrokerUrl(BrokerUnreachable):
    """The broker URL is malformed or not an AMQP URL: no connection is attempted."""

    MESSAGE = "The message broker URL %(broker)s is not valid: %(detail)s."


class ServiceUnavailable(BridgeError):
    """The broker has no queue for the service: it is not running (never started here)."""

    PARAMS = ("service", "broker")
    MESSAGE = (
        "The service %(service)r is not running: the broker at %(broker)s has no queue for it."
    )


class ServiceTimeout(BridgeError):
    """Requests were sent but no reply arrived before the deadline (``timeout`` seconds)."""

    PARAMS = ("service", "method", "timeout", "broker")
    MESSAGE = (
        "No reply from %(service)s.%(method)s within %(timeout)g s (broker %(broker)s): "
        "the service is busy or not consuming its queue."
    )


class RequestsNotAccepted(ServiceTimeout):
    """No reply before the deadline, and the broker had refused the requests, or not even
    confirmed taking them: their queue could not accept them (a replicated queue that lost its
    quorum, say)."""

    MESSAGE = (
        "No reply from %(service)s.%(method)s within %(timeout)g s: the broker at %(broker)s "
        "did not accept the requests (is its queue without enough cluster nodes?)."
    )


class InvalidOperands(BridgeError):
    """The service refused the operands; retrying the same input gives the same answer."""

    PARAMS = ("service", "method", "detail")
    MESSAGE = "%(service)s.%(method)s refused the operands: %(detail)s"


class RemoteFailure(BridgeError):
    """The service raised an error other than ``InvalidOperand`` (``exc_type`` is its class)."""

    PARAMS = ("service", "method", "exc_type", "detail")
    MESSAGE = "%(service)s.%(method)s failed with %(exc_type)s: %(detail)s"


def remote_error(service, method, exc_type, detail):
    """The error for a reply that carries a remote exception (nameko's ``exc_type``, ``value``).

    >>> remote_error("compute", "method", "InvalidOperand", "value1 is not a number")
    InvalidOperands('compute.method refused the operands: value1 is not a number')
    """
    if exc_type == REMOTE_INVALID_OPERAND:
        return InvalidOperands(service=service, method=method, detail=detail)
    return RemoteFailure(service=service, method=method, exc_type=exc_type, detail=detail)

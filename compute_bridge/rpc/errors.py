"""What can go wrong when Odoo calls a Nameko service.

Callers catch meaning, not library internals (kombu, amqp, nameko)::

    BridgeError                  anything below; str() is readable and free of credentials
    ├── BrokerUnreachable        RabbitMQ could not be reached (refused, DNS, auth, lost)
    ├── ServiceUnavailable       the broker answered but no such service is bound
    ├── ServiceTimeout           a request was queued but no reply came in time
    ├── InvalidOperands          the service refused the operands (remote ``InvalidOperand``)
    └── RemoteFailure            the service raised anything else

Every message is built from a masked broker URL (see :func:`.config.mask_url`), never from the
original exception text alone, because library errors may echo the URL with its password.
"""


class BridgeError(Exception):
    """Base class: a call to a Nameko service did not return a result.

    ``retryable`` tells the caller whether pressing the button again may help.
    """

    retryable = True

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class BrokerUnreachable(BridgeError):
    """No AMQP connection to the broker (refused, unknown host, bad credentials, dropped)."""


class ServiceUnavailable(BridgeError):
    """The broker has no queue for the service: it is not running (nameko ``UnknownService``)."""


class ServiceTimeout(BridgeError):
    """The request was delivered to a queue but no reply arrived within the timeout."""


class InvalidOperands(BridgeError):
    """The service refused the operands (remote ``exc_type == "InvalidOperand"``).

    Retrying the same input gives the same answer.
    """

    retryable = False


class RemoteFailure(BridgeError):
    """The service raised an error other than ``InvalidOperand``.

    ``exc_type`` is the remote exception's class name, kept for logs and callers.
    """

    def __init__(self, message, exc_type=None):
        super().__init__(message)
        self.exc_type = exc_type

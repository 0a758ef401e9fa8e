"""The compute service: adds two numbers and tells the notify service about it.

    n.rpc.compute.method(99999, 99999)  ->  199998
"""

import logging
import math
import sys

from services import instance
from services.dependencies import EntrypointMetrics, Notifier, Registration, Tracing
from services.entrypoints import rpc

_logger = logging.getLogger(__name__)

SERVICE_NAME = "compute"
OPERATION_COMPLETED_MESSAGE = "Operation completed %s"

# Long or hostile operands (megabyte strings, bidi controls) are quoted this short in errors.
MAX_REPR_LENGTH = 60


class InvalidOperand(ValueError):
    """An operand (or the sum) that compute refuses; the caller sees RemoteError 'InvalidOperand'.

    Raised instead of letting `+` fail or succeed oddly: "abc" + "def" would concatenate,
    True + 1 would be 2, NaN and inf would travel on as invalid JSON for most clients, and an
    int too long to be written out (sys.get_int_max_str_digits()) could be neither sent back
    nor notified.
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
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))):
        raise InvalidOperand("%s must be a finite int or float, got %s" % (name, _describe(value)))
    return value


def check_sum(total, value1, value2):
    """Return `total` if it is finite and can be written out, else raise InvalidOperand."""
    if isinstance(total, float) and not math.isfinite(total):
        raise InvalidOperand("value1 + value2 overflows to infinity: %s + %s"
                             % (_describe(value1), _describe(value2)))
    try:
        str(total)  # what the reply's JSON and the notification do with it
    except ValueError:
        raise InvalidOperand(
            "value1 + value2 has more than %d digits, too many to send back"
            % sys.get_int_max_str_digits()
        ) from None
    return total


def add(value1, value2):
    """value1 + value2 for finite ints and floats; InvalidOperand for anything else.

    Ints stay exact up to the number of digits Python writes out; a float sum that leaves the
    float range is refused rather than returned as inf.
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
    return check_sum(total, value1, value2)


class ComputeService:
    name = SERVICE_NAME

    registration = Registration()
    metrics = EntrypointMetrics()
    tracing = Tracing()
    notify = Notifier()

    # expected: the caller's mistake, logged on one line (services/logs.py), never retried
    @rpc(expected_exceptions=InvalidOperand)
    def method(self, value1, value2):
        instance.count_call()
        total = add(value1, value2)
        # at DEBUG: a line per call is noise at INFO, where the heartbeat's summary counts them
        _logger.debug("method(%r, %r) = %r", value1, value2, total)
        self.notify(OPERATION_COMPLETED_MESSAGE % total)
        return total

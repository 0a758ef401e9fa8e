"""What the background runner decides, without Odoo: which calls may be made, what an error
means for a call, and when a call is tried again.

>>> sorted(parse_allowed_methods("compute.method, other.add\\nother.add"))
['compute.method', 'other.add']
>>> outcome_kind(ServiceTimeout(service="s", method="m", timeout=1, broker="b"))
'retry'
>>> [retry_delay(attempt) for attempt in (1, 2, 3, 10)]
[2, 4, 8, 300]
"""

import json
import re

from .errors import (
    BrokerUnreachable,
    InvalidOperands,
    RemoteFailure,
    ServiceTimeout,
    ServiceUnavailable,
)

ALLOWED_METHODS_PARAM = "compute_bridge.allowed_methods"
MAX_ATTEMPTS_PARAM = "compute_bridge.max_attempts"
RETENTION_DAYS_PARAM = "compute_bridge.call_retention_days"
DEFAULT_ALLOWED_METHODS = "compute.method"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETENTION_DAYS = 7
# A service.method is two Python identifiers (nameko's service name and method name).
METHOD_PATTERN = re.compile(r"^[A-Za-z_][\w-]*\.[A-Za-z_]\w*$")
SEPARATORS = re.compile(r"[\s,;]+")

# What the runner does with a call once its send ended.
DONE = "done"  # a result: apply it
FAIL = "fail"  # the service refused or failed: the same input gives the same answer
RETRY = "retry"  # perhaps delivered, no answer: try again later, counted
REQUEUE = "requeue"  # never delivered (broker or service away): try again soon, not counted

# Seconds before a counted retry: RETRY_BASE_DELAY * 2 ** (attempt - 1), at most RETRY_MAX_DELAY.
RETRY_BASE_DELAY = 2
RETRY_MAX_DELAY = 300
# Seconds before a call that could not be delivered is tried again: short, so that calls queued
# while a service was away are done within seconds of its start, long enough not to spin.
REQUEUE_DELAY = 2


def parse_allowed_methods(text):
    """The set of ``service.method`` names in ``text`` (comma, semicolon or blank separated)."""
    return frozenset(name for name in SEPARATORS.split(text or "") if name)


def invalid_method_names(text):
    """The names in ``text`` that cannot be a ``service.method``.

    >>> invalid_method_names("compute.method compute bad.na-me")
    ['bad.na-me', 'compute']
    """
    return sorted(name for name in parse_allowed_methods(text) if not METHOD_PATTERN.match(name))


def outcome_kind(error):
    """What a call whose send ended with ``error`` (None: a result) becomes: one of DONE, FAIL,
    RETRY, REQUEUE. A BrokerUnreachable may come from a connection lost after the publish: the
    request may then have been delivered, which is harmless since a result is applied only for
    the attempt that is waiting for it."""
    if error is None:
        return DONE
    if isinstance(error, (InvalidOperands, RemoteFailure)):
        return FAIL
    if isinstance(error, (ServiceUnavailable, BrokerUnreachable)):
        return REQUEUE
    if isinstance(error, ServiceTimeout):
        return RETRY
    raise TypeError("not a bridge error: %r" % (error,))


def retry_delay(attempt):
    """Seconds before the counted attempt number ``attempt + 1``: doubling, capped."""
    return min(RETRY_BASE_DELAY * 2 ** max(attempt - 1, 0), RETRY_MAX_DELAY)


def positive_int(raw, default):
    """``raw`` (a system parameter's text) as a positive int, else ``default``.

    >>> positive_int("3", 5), positive_int("0", 5), positive_int("x", 5), positive_int(None, 5)
    (3, 5, 5, 5)
    """
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


def dumps_arguments(value):
    """``value`` as JSON text, or ``TypeError``/``ValueError`` if JSON cannot carry it exactly
    (NaN and infinities are refused: the services' JSON serializer refuses them too)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))

"""Test connection: one real round trip through the broker to the compute service and back.

It proves more than a connection to the broker: a request reached a running compute service
and its reply came back, and it says how long that took.
"""

import collections

from .client import call_many
from .errors import RemoteFailure

COMPUTE_SERVICE = "compute"
COMPUTE_METHOD = "method"
PROBE_OPERANDS = (1, 1)
PROBE_EXPECTED = 2
UNEXPECTED_RESULT = "UnexpectedResult"  # RemoteFailure.exc_type of a wrong answer

ProbeResult = collections.namedtuple("ProbeResult", ["operands", "result", "round_trip_ms"])
ProbeResult.__doc__ = """A successful probe: ``result`` of ``operands`` and the round trip time
(request sent to reply read), without the time to open the connection."""


def probe_compute(config, service=COMPUTE_SERVICE, method=COMPUTE_METHOD):
    """Call ``service.method(1, 1)`` and return a :class:`ProbeResult`.

    Raises a :class:`.errors.BridgeError` (readable, credentials masked) when the broker, the
    service or its answer is wrong: a service that answers 1 + 1 with anything but 2 is not the
    compute service this addon expects.
    """
    outcome = call_many(config, service, method, [PROBE_OPERANDS])[0]
    if outcome.error is not None:
        raise outcome.error
    if outcome.value != PROBE_EXPECTED:
        raise RemoteFailure(
            service=service, method=method, exc_type=UNEXPECTED_RESULT,
            detail="%s + %s = %r, expected %s" % (*PROBE_OPERANDS, outcome.value, PROBE_EXPECTED),
        )
    return ProbeResult(PROBE_OPERANDS, outcome.value, outcome.duration_ms)

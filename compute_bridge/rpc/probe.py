"""Test connection: one real round trip through the broker to the compute service and back.

:func:`.client.test_connection` proves the broker accepts a connection; this proves more: a
request reached a running compute service and its reply came back, and says how long that took.
"""

import collections
import time

from .client import call_many
from .errors import RemoteFailure

COMPUTE_SERVICE = "compute"
COMPUTE_METHOD = "method"
PROBE_OPERANDS = (1, 1)
PROBE_EXPECTED = 2

ProbeResult = collections.namedtuple("ProbeResult", ["operands", "result", "round_trip_ms"])
ProbeResult.__doc__ = """A successful probe: ``result`` of ``operands`` and the round trip time
(request sent to reply read), without the time to open the connection."""


def probe_compute(config, service=COMPUTE_SERVICE, method=COMPUTE_METHOD):
    """Call ``service.method(1, 1)`` and return a :class:`ProbeResult`.

    Raises a :class:`.errors.BridgeError` (readable, credentials masked) when the broker, the
    service or its answer is wrong: a service that answers 1 + 1 with anything but 2 is not the
    compute service this addon expects.
    """
    started = time.monotonic()
    outcome = call_many(config, service, method, [PROBE_OPERANDS])[0]
    if outcome.error is not None:
        raise outcome.error
    if outcome.value != PROBE_EXPECTED:
        raise RemoteFailure(
            "%s.%s answered %r to %s + %s, expected %s."
            % (service, method, outcome.value, *PROBE_OPERANDS, PROBE_EXPECTED)
        )
    # duration_ms excludes opening the connection; fall back to the whole call if it is absent
    round_trip = outcome.duration_ms
    if round_trip is None:
        round_trip = (time.monotonic() - started) * 1000.0
    return ProbeResult(PROBE_OPERANDS, outcome.value, round_trip)

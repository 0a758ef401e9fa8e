"""This process's identity and state, shared by every service container `nameko run` starts in it.

`nameko run services` runs compute, notify, heartbeat and health as separate containers of ONE
process, so module-level state here is process-wide: the heartbeat reports the calls compute
served and the broker state it checked, and /health reports the same.
"""

import datetime
import os
import socket
import time
import uuid

# A fresh id per process: two instances on one host (same hostname) are still told apart.
INSTANCE_ID = uuid.uuid4().hex
HOST = socket.gethostname()
PID = os.getpid()
STARTED_MONOTONIC = time.monotonic()
STARTED_AT = datetime.datetime.now(datetime.UTC)

# Workers are greenlets of one thread, and none of the updates below yields: no lock is needed.
_calls_served = 0
_calls_by_service = {}  # service name -> workers run (every entrypoint)
_services = set()  # names of the service containers running in this process
_broker_connected = False
_broker_checked = None  # time.monotonic() of the last broker check
_broker_check_valid_for = 0.0  # seconds after which that check proves nothing
_consumers = {}  # each service container's queue consumer -> connected to the broker?

# Where this process's /health answers, once the health service has bound its port (it may be an
# ephemeral port, see services/entrypoints.py); None until then or when health is not running.
health_address = None


def count_call():
    """Count one compute call served by this process."""
    global _calls_served
    _calls_served += 1


def count_entrypoint_call(service):
    """Count one worker run by `service` (services/dependencies.py EntrypointMetrics)."""
    _calls_by_service[service] = _calls_by_service.get(service, 0) + 1


def calls_by_service():
    return dict(sorted(_calls_by_service.items()))


def calls_served():
    return _calls_served


def service_started(name):
    _services.add(name)


def service_stopped(name):
    _services.discard(name)


def services():
    """The names of the service containers this process runs, sorted."""
    return sorted(_services)


def record_broker_check(connected, valid_for):
    """Record a broker check, which stands for `valid_for` seconds: checks that stopped
    happening prove nothing."""
    global _broker_connected, _broker_checked, _broker_check_valid_for
    _broker_connected = bool(connected)
    _broker_checked = time.monotonic()
    _broker_check_valid_for = valid_for


def record_consumer(consumer, connected):
    _consumers[consumer] = connected


def forget_consumer(consumer):
    _consumers.pop(consumer, None)


def broker_connected():
    """Whether this instance is connected to its broker: the last broker check reached it and
    still stands, and every queue consumer of this process is connected."""
    return (_broker_connected and _broker_checked is not None
            and time.monotonic() - _broker_checked <= _broker_check_valid_for
            and all(_consumers.values()))


def uptime():
    """Seconds since this process imported the services."""
    return time.monotonic() - STARTED_MONOTONIC


def identity(service_name):
    """What tells this instance apart from every other one, for heartbeats and /health."""
    health_port = health_address[1] if health_address else None
    return {
        "service": service_name,
        "services": services(),
        "host": HOST,
        "pid": PID,
        "instance_id": INSTANCE_ID,
        "started_at": STARTED_AT.isoformat(),
        "uptime": round(uptime(), 3),
        "calls_served": calls_served(),
        "calls_by_service": calls_by_service(),
        "health_port": health_port,
        "broker_connected": broker_connected(),
    }

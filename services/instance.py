"""This process's identity, shared by every service container that `nameko run` starts in it.

`nameko run services` runs compute, notify, heartbeat and health as separate containers of ONE
process, so module-level state here is process-wide: the heartbeat reports the calls compute
served, and /health reports the same identity as the heartbeat.
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

# Workers are greenlets of one thread, and `+= 1` has no yield point: no lock is needed.
_calls_served = 0

# Where this process's /health answers, once the health service has bound its port (it may be an
# ephemeral port, see services/health.py); None until then or when health is not running.
health_address = None


def count_call():
    """Count one compute call served by this process."""
    global _calls_served
    _calls_served += 1


def calls_served():
    return _calls_served


def uptime():
    """Seconds since this process imported the services."""
    return time.monotonic() - STARTED_MONOTONIC


def identity(service_name):
    """What tells this instance apart from every other one, for heartbeats and /health."""
    health_port = health_address[1] if health_address else None
    return {
        "service": service_name,
        "host": HOST,
        "pid": PID,
        "instance_id": INSTANCE_ID,
        "started_at": STARTED_AT.isoformat(),
        "uptime": round(uptime(), 3),
        "calls_served": calls_served(),
        "health_port": health_port,
    }

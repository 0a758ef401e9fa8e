"""The compute_bridge Nameko services. From the repository root:

    nameko run --broker pyamqp://guest:guest@localhost services
    nameko run --config services/config.yaml services

`nameko run services` runs every service class found in this namespace.
"""

import logging

from services import logs, telemetry

# The log format uses none of these, and threading.current_thread() is slow under eventlet's
# green threads: computing them for every record would cost more than the line itself.
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
# `nameko run` has configured logging by now (it does before importing the services).
logs.use_default_format()
logs.tracebacks_off()
logs.passwords_masked()
# after the log format: the trace ids are added by a filter on the root logger's handlers
telemetry.setup()

from services.compute import ComputeService  # noqa: E402
from services.health import HealthService  # noqa: E402
from services.heartbeat import HeartbeatService  # noqa: E402
from services.notify import NotifyService  # noqa: E402

__all__ = ["ComputeService", "HealthService", "HeartbeatService", "NotifyService"]

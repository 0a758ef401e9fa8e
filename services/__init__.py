"""The compute_bridge Nameko services. From the repository root:

    nameko run --broker pyamqp://guest:guest@localhost services
    nameko run --config services/config.yaml services

`nameko run services` runs every service class found in this namespace.
"""

import logging

# The log format uses none of these; computing them costs ~6% of the services' CPU at INFO,
# mostly threading.current_thread(), which is slow under eventlet's green threads.
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False

from services.compute import ComputeService  # noqa: E402
from services.health import HealthService  # noqa: E402
from services.heartbeat import HeartbeatService  # noqa: E402
from services.notify import NotifyService  # noqa: E402

__all__ = ["ComputeService", "HealthService", "HeartbeatService", "NotifyService"]

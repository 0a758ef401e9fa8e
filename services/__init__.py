"""The compute_bridge Nameko services. From the repository root:

    nameko run --broker pyamqp://guest:guest@localhost services
    nameko run --config services/config.yaml services

`nameko run services` runs every service class found in this namespace.
"""

from services.compute import ComputeService
from services.health import HealthService
from services.heartbeat import HeartbeatService
from services.notify import NotifyService

__all__ = ["ComputeService", "HealthService", "HeartbeatService", "NotifyService"]

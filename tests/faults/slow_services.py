"""The real services, with compute.method slowed down: a batch then lasts long enough for a test
to SIGKILL one instance while it holds unacknowledged requests.

    FAULTS_COMPUTE_DELAY=0.1 nameko run --broker <uri> slow_services   (PYTHONPATH=tests/faults)

Only the delay differs: same service name, same queue, same checks and notifications.
`nameko run` starts every service class it finds in this module, so the real class is reached
through its module, never bound to a name here.

    FAULTS_SLOW_DELAY=2 nameko run --broker <uri> slow_services:SlowService

is another service, ``slow``, whose ``method`` adds like compute's after ``FAULTS_SLOW_DELAY`` s:
background calls can wait on it while compute.method answers interactive clicks at full speed.
"""

import logging
import os

import eventlet

import services.compute
import services.notify
from services.entrypoints import rpc  # the services' own @rpc: only the delay differs

DELAY = float(os.environ.get("FAULTS_COMPUTE_DELAY", "0.1"))
SLOW_DELAY = float(os.environ.get("FAULTS_SLOW_DELAY", "2"))
_logger = logging.getLogger(__name__)


class ComputeService(services.compute.ComputeService):
    @rpc(expected_exceptions=services.compute.InvalidOperand)
    def method(self, value1, value2):
        _logger.info("slow-compute %r + %r", value1, value2)  # tests watch for this line
        eventlet.sleep(DELAY)
        return services.compute.ComputeService.method(self, value1, value2)


class SlowService:
    name = "slow"

    @rpc(expected_exceptions=services.compute.InvalidOperand)
    def method(self, value1, value2):
        _logger.info("slow-method %r + %r", value1, value2)  # tests count these lines
        eventlet.sleep(SLOW_DELAY)
        return services.compute.add(value1, value2)


class NotifyService(services.notify.NotifyService):
    pass

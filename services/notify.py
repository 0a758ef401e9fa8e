"""The notify service: logs what it is told, over RPC (as in the blog post) or by event."""

import logging

from nameko.events import event_handler

from services.compute import OPERATION_COMPLETED_EVENT, OPERATIONS_COMPLETED_EVENT
from services.compute import SERVICE_NAME as COMPUTE_SERVICE_NAME
from services.entrypoints import rpc

_logger = logging.getLogger(__name__)

SERVICE_NAME = "notify"


class NotifyService:
    name = SERVICE_NAME

    @rpc
    def send(self, message):
        _logger.info("%s", message)

    # The default SERVICE_POOL handler type: all notify instances share one queue, so each
    # completed operation is logged once in the cluster, not once per instance.
    @event_handler(COMPUTE_SERVICE_NAME, OPERATIONS_COMPLETED_EVENT)
    def on_operations_completed(self, messages):
        # compute batches its notifications: one line per message all the same
        for message in messages:
            self.send(message)

    # One message per event: what compute instances of earlier versions send.
    @event_handler(COMPUTE_SERVICE_NAME, OPERATION_COMPLETED_EVENT)
    def on_operation_completed(self, message):
        self.send(message)

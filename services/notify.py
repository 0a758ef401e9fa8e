"""The notify service: logs what it is told, over RPC (as in the blog post) or by event."""

import logging

from services.compute import SERVICE_NAME as COMPUTE_SERVICE_NAME
from services.dependencies import (
    NOTIFY_SERVICE_NAME,
    OPERATIONS_COMPLETED_EVENT,
    EntrypointMetrics,
    Registration,
    Tracing,
)
from services.entrypoints import event_handler, rpc
from services.logs import quoted

_logger = logging.getLogger(__name__)

SERVICE_NAME = NOTIFY_SERVICE_NAME  # the name compute's Notifier calls


class NotifyService:
    name = SERVICE_NAME

    registration = Registration()
    metrics = EntrypointMetrics()
    tracing = Tracing()

    # One line per message, at DEBUG: a line per call is noise at INFO, where the heartbeat's
    # summary counts the calls. Anyone may call this over RPC: the line is capped and escaped.
    @rpc
    def send(self, message):
        _logger.debug("%s", quoted(message))

    # The default SERVICE_POOL handler type: all notify instances share one queue, so each
    # completed operation is logged once in the cluster, not once per instance.
    @event_handler(COMPUTE_SERVICE_NAME, OPERATIONS_COMPLETED_EVENT)
    def on_operations_completed(self, messages):
        # compute batches its notifications: one line per message all the same, each in the
        # trace of the call it tells about
        for position, message in enumerate(messages):
            with self.tracing(position):
                self.send(message)

"""The heartbeat service: every running instance says, at a fixed interval, that it is alive.

Each beat first checks the broker, then carries the instance's identity (services/instance.py)
with "broker_connected" and the "services" this process runs, and is
  - logged at DEBUG as one line "heartbeat <JSON>" (at INFO: the first beat, then a summary),
  - dispatched as the nameko event "heartbeat" from the service "heartbeat", when the broker
    was reached,
  - POSTed as JSON to HEARTBEAT_URL, when set, with the header X-Heartbeat-Secret: a monitor
    that still hears the beat while the broker is lost reads "broker_connected": false.
"""

import logging

from nameko.constants import NON_PERSISTENT
from nameko.events import EventDispatcher

from services.dependencies import BrokerCheck, EntrypointMetrics, Monitor, Registration
from services.entrypoints import configured_timer
from services.settings import heartbeat_interval
from services.telemetry import HEARTBEAT_VIA_EVENT

_logger = logging.getLogger(__name__)

SERVICE_NAME = "heartbeat"
HEARTBEAT_EVENT = "heartbeat"


class HeartbeatService:
    name = SERVICE_NAME

    registration = Registration()
    metrics = EntrypointMetrics()
    broker_check = BrokerCheck()
    monitor = Monitor()
    # a missed beat is simply replaced by the next one: no disk write on the broker for it
    dispatch = EventDispatcher(delivery_mode=NON_PERSISTENT)

    # eager: a new instance announces itself as soon as it starts, not one interval later
    @configured_timer(read_interval=heartbeat_interval, eager=True)
    def beat(self):
        reached = self.broker_check()
        beat = self.monitor.payload(SERVICE_NAME)
        self.monitor.log(beat)
        # a publish to a broker just found unreachable would only wait on nameko's retries
        dispatched = False
        if reached:
            try:
                self.dispatch(HEARTBEAT_EVENT, beat)
                dispatched = True
            except Exception as error:  # noqa: BLE001 - a broker hiccup must not stop the timer
                _logger.warning("could not dispatch the heartbeat event: %s", error)
        self.monitor.count(HEARTBEAT_VIA_EVENT, dispatched)
        self.monitor.post(beat)
        return beat

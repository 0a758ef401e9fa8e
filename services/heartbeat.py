"""The heartbeat service: every running instance says, at a fixed interval, that it is alive.

Each beat carries the instance's identity (services/instance.py) and is
  - logged as one line starting with "heartbeat " followed by the JSON payload,
  - dispatched as the nameko event "heartbeat" from the service "heartbeat",
  - POSTed as JSON to HEARTBEAT_URL, when set, with the header X-Heartbeat-Secret.
"""

import collections
import datetime
import json
import logging

import eventlet
import requests
from nameko.constants import NON_PERSISTENT
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from services import instance
from services.settings import positive_number_setting, setting

_logger = logging.getLogger(__name__)

SERVICE_NAME = "heartbeat"
HEARTBEAT_EVENT = "heartbeat"

INTERVAL_KEY = "HEARTBEAT_INTERVAL"
URL_KEY = "HEARTBEAT_URL"
SECRET_KEY = "HEARTBEAT_SECRET"
DEFAULT_INTERVAL = 30  # seconds
SECRET_HEADER = "X-Heartbeat-Secret"

# A monitor that does not answer within this many seconds is skipped until the next beat: the
# POST runs in the timer's worker, and a beat must never wait long on someone else's server.
MONITOR_TIMEOUT = 2.0
# Hard cap on the whole POST (DNS, connect, send, read), which requests' timeout alone is not.
MONITOR_DEADLINE = MONITOR_TIMEOUT + 0.5


def heartbeat_interval(config):
    """HEARTBEAT_INTERVAL in seconds: environment, then nameko config, then 30."""
    return positive_number_setting(config, INTERVAL_KEY, DEFAULT_INTERVAL)


class ConfiguredTimer(Timer):
    """A nameko timer whose interval is read from the container's config (or environment).

    `@timer(interval=...)` fixes the interval when the module is imported, before any config
    is known; this one reads it in setup(), once the container (and its config) exists.
    """

    def __init__(self, read_interval=None, eager=False, **kwargs):
        # read_interval(config) -> seconds; keyword-only in use: nameko's decorator takes a
        # lone positional function for the decorated method itself.
        self.read_interval = read_interval
        super().__init__(interval=None, eager=eager, **kwargs)

    def setup(self):
        self.interval = self.read_interval(self.container.config)
        super().setup()


configured_timer = ConfiguredTimer.decorator


MonitorSettings = collections.namedtuple("MonitorSettings", "interval url secret")


class HeartbeatSettings(DependencyProvider):
    """Gives the heartbeat worker its settings, read from the container's config (nameko 2.x
    services have no config of their own) with the environment taking precedence."""

    def setup(self):
        config = self.container.config
        if setting(config, URL_KEY) and not setting(config, SECRET_KEY):
            # the monitor (Odoo's endpoint) refuses a beat without the secret: say so once
            _logger.warning("%s is set but %s is not: the monitor will likely refuse the beats",
                            URL_KEY, SECRET_KEY)

    def get_dependency(self, worker_ctx):
        config = self.container.config
        return MonitorSettings(
            interval=heartbeat_interval(config),
            url=setting(config, URL_KEY),
            secret=setting(config, SECRET_KEY, ""),
        )


def post_to_monitor(url, secret, payload):
    """POST `payload` to the monitor; True if it answered 2xx. Never raises, never blocks long.

    A monitor that is down, slow or refusing is the monitor's problem: log a warning and let the
    service carry on.
    """
    headers = {SECRET_HEADER: secret} if secret else {}
    try:
        with eventlet.Timeout(MONITOR_DEADLINE):
            response = requests.post(url, json=payload, headers=headers, timeout=MONITOR_TIMEOUT)
        response.raise_for_status()
    except eventlet.Timeout:
        _logger.warning("heartbeat monitor %s did not answer within %ss", url, MONITOR_DEADLINE)
        return False
    except Exception as error:  # noqa: BLE001 - whatever the monitor does, the beat goes on
        _logger.warning("heartbeat monitor %s failed: %s", url, error)
        return False
    return True


class HeartbeatService:
    name = SERVICE_NAME

    # a missed beat is simply replaced by the next one: no disk write on the broker for it
    dispatch = EventDispatcher(delivery_mode=NON_PERSISTENT)

    settings = HeartbeatSettings()

    def payload(self):
        """The beat: who this instance is and how it is doing."""
        beat = instance.identity(SERVICE_NAME)
        beat["interval"] = self.settings.interval
        beat["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat()
        return beat

    # eager: a new instance announces itself as soon as it starts, not one interval later
    @configured_timer(read_interval=heartbeat_interval, eager=True)
    def beat(self):
        beat = self.payload()
        _logger.info("heartbeat %s", json.dumps(beat, sort_keys=True))
        try:
            self.dispatch(HEARTBEAT_EVENT, beat)
        except Exception:  # noqa: BLE001 - a broker hiccup must not stop the timer
            _logger.warning("could not dispatch the heartbeat event", exc_info=True)
        if self.settings.url:
            post_to_monitor(self.settings.url, self.settings.secret, beat)
        return beat

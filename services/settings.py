"""Reading the services' settings: environment variable first, then nameko config, then default.

The environment wins so that one `nameko run --broker ... services` (which has no config file)
can still be tuned per instance, e.g. `HEARTBEAT_INTERVAL=1 nameko run --broker ... services`.
"""

import logging
import os

_logger = logging.getLogger(__name__)


def setting(config, key, default=None):
    """The value of `key`: the environment variable, else the nameko config key, else `default`.

    An empty environment variable counts as unset, so `HEARTBEAT_URL=` does not hide the
    config file's value.
    """
    value = os.environ.get(key)
    if value not in (None, ""):
        return value
    value = (config or {}).get(key)
    if value not in (None, ""):
        return value
    return default


def positive_number_setting(config, key, default):
    """A setting that must be a positive number (an interval in seconds, say).

    A bad value is logged and replaced by `default` rather than stopping the service: a typo in a
    monitoring knob should not take the compute service down with it.
    """
    raw = setting(config, key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        _logger.warning("%s=%r is not a number; using %s", key, raw, default)
        return float(default)
    if not value > 0 or value == float("inf"):
        _logger.warning("%s=%r must be a positive finite number; using %s", key, raw, default)
        return float(default)
    return value

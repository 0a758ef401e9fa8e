"""The services' own settings and their defaults: the one place a default is written.

Each setting is read from the environment first, then from nameko's config (a `--config` file),
then falls back to the default here. Python holds the defaults because the blog post's plain
`nameko run --broker ... services` has no config file at all; services/config.yaml therefore
carries only nameko's own keys, and may name any setting below to fix it for a deployment.

The environment wins so that one `nameko run --broker ... services` can still be tuned per
instance, e.g. `HEARTBEAT_INTERVAL=1 nameko run --broker ... services`.
"""

import logging
import math
import os

from nameko.constants import WEB_SERVER_CONFIG_KEY

_logger = logging.getLogger(__name__)

# Seconds between two heartbeats of an instance; also the pace of its broker check, so /health
# answers 503 at most one interval after the broker is lost.
HEARTBEAT_INTERVAL_KEY = "HEARTBEAT_INTERVAL"
DEFAULT_HEARTBEAT_INTERVAL = 30
# Where each heartbeat is POSTed as JSON (unset: nowhere), with the header
# X-Heartbeat-Secret: HEARTBEAT_SECRET.
HEARTBEAT_URL_KEY = "HEARTBEAT_URL"
HEARTBEAT_SECRET_KEY = "HEARTBEAT_SECRET"

# Where GET /health listens. An address that is given is bound exactly (a clash is an error);
# the default falls back to a free port when another instance on the host has it.
WEB_SERVER_ADDRESS_KEY = WEB_SERVER_CONFIG_KEY
DEFAULT_WEB_SERVER_ADDRESS = "0.0.0.0:8000"

# How compute tells notify: one fire-and-forget event per batch, or the blog post's rpc call_async.
NOTIFY_VIA_KEY = "NOTIFY_VIA"
NOTIFY_VIA_EVENT = "event"
NOTIFY_VIA_RPC = "rpc"
DEFAULT_NOTIFY_VIA = NOTIFY_VIA_EVENT

# The type of the queues the services consume from and that outlive them (the RPC queue
# rpc-<service>, the event handlers' evt-... queues): "quorum" (replicated on a RabbitMQ cluster),
# "classic", or unset: the virtual host's default queue type, classic unless the vhost was created
# with --default-queue-type. A queue's type is fixed when it is first declared: to change it,
# stop the services, delete the queue, start them again. Queues that die with their consumer
# (reply queues, auto-delete event queues) are always classic.
QUEUE_TYPE_KEY = "QUEUE_TYPE"
QUEUE_TYPE_QUORUM = "quorum"
QUEUE_TYPE_CLASSIC = "classic"
QUEUE_TYPE_VHOST_DEFAULT = ""
DEFAULT_QUEUE_TYPE = QUEUE_TYPE_VHOST_DEFAULT

# The root log level when no LOGGING configuration is given (environment only: it is needed
# before any config is read).
LOG_LEVEL_KEY = "LOG_LEVEL"
DEFAULT_LOG_LEVEL = "INFO"


def setting(config, key, default=None):
    """The value of `key`: the environment variable, else the nameko config key, else `default`.

    An empty value counts as unset, so `HEARTBEAT_URL=` does not hide the config file's value.
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
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        _logger.warning("%s=%r is not a positive finite number; using %s", key, raw, default)
        return float(default)
    return value


def heartbeat_interval(config):
    """HEARTBEAT_INTERVAL in seconds."""
    return positive_number_setting(config, HEARTBEAT_INTERVAL_KEY, DEFAULT_HEARTBEAT_INTERVAL)


def queue_type(config):
    """QUEUE_TYPE, lower-cased: quorum, classic, or "" for the virtual host's default; an unknown
    value is logged and replaced by the default."""
    value = str(setting(config, QUEUE_TYPE_KEY, DEFAULT_QUEUE_TYPE)).lower()
    if value not in (QUEUE_TYPE_QUORUM, QUEUE_TYPE_CLASSIC, QUEUE_TYPE_VHOST_DEFAULT):
        _logger.warning("%s=%r is neither %r nor %r; using the virtual host's default",
                        QUEUE_TYPE_KEY, value, QUEUE_TYPE_QUORUM, QUEUE_TYPE_CLASSIC)
        return DEFAULT_QUEUE_TYPE
    return value


def notify_via(config):
    """NOTIFY_VIA, lower-cased; an unknown value is logged and replaced by the default."""
    via = str(setting(config, NOTIFY_VIA_KEY, DEFAULT_NOTIFY_VIA)).lower()
    if via not in (NOTIFY_VIA_EVENT, NOTIFY_VIA_RPC):
        _logger.warning("%s=%r is neither %r nor %r; using %r", NOTIFY_VIA_KEY, via,
                        NOTIFY_VIA_EVENT, NOTIFY_VIA_RPC, DEFAULT_NOTIFY_VIA)
        return DEFAULT_NOTIFY_VIA
    return via

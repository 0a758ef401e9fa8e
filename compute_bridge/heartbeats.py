"""What a service heartbeat is and when an instance counts as stale, without Odoo.

Every ``nameko run`` process POSTs a beat to ``/compute_bridge/heartbeat`` every ``interval``
seconds (services/heartbeat.py). This module reads such a body and applies the stale rule; the
controller (controllers/heartbeat.py) and the model (models/compute_service_instance.py) only
call it, so the rules are tested here without a database.

Settings, read by :func:`heartbeat_secret`:

``COMPUTE_BRIDGE_HEARTBEAT_SECRET`` (environment)
    The shared secret the services send as ``X-Heartbeat-Secret`` (``make run`` exports the same
    value to both sides).
``compute_bridge.heartbeat_secret`` (system parameter)
    Used when the environment variable is unset; generated at install.

>>> beat = parse_heartbeat(b'{"instance_id": "ab12", "service": "heartbeat", "pid": 7, '
...                        b'"uptime": 12.5, "calls_served": 3, "interval": 30.0}')
>>> beat["instance_id"], beat["pid"], beat["interval"], beat["host"]
('ab12', 7, 30.0, '')
"""

import datetime
import json
import math

SECRET_HEADER = "X-Heartbeat-Secret"
SECRET_ENV_VAR = "COMPUTE_BRIDGE_HEARTBEAT_SECRET"
SECRET_PARAM = "compute_bridge.heartbeat_secret"

# A beat is a few hundred bytes; anything much larger is not a heartbeat, and reading it would
# let an unauthenticated caller make the server buffer arbitrary amounts of data.
MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_LENGTH = 255  # longest service name, host or instance id we keep
# The services' default (services/heartbeat.py DEFAULT_INTERVAL), used when a beat omits it.
DEFAULT_INTERVAL = 30.0
# An instance is stale once this many beats in a row are overdue: one late beat (a busy worker,
# a GC pause) must not paint it red, three missed ones mean it is gone.
STALE_AFTER_MISSED_BEATS = 3


class HeartbeatError(ValueError):
    """The body is not a heartbeat; ``str()`` says why, fit for a 400 answer."""


def heartbeat_secret(get_param, environ):
    """The secret beats must carry: the environment variable, else the system parameter.

    Returns ``""`` when neither is set, which the controller treats as "refuse every beat".

    >>> heartbeat_secret({SECRET_PARAM: "from-db"}.get, {SECRET_ENV_VAR: "from-env"})
    'from-env'
    >>> heartbeat_secret({SECRET_PARAM: "from-db"}.get, {SECRET_ENV_VAR: ""})
    'from-db'
    """
    return (environ.get(SECRET_ENV_VAR) or "").strip() or (get_param(SECRET_PARAM) or "").strip()


def parse_heartbeat(raw):
    """Validate a heartbeat body (bytes) and return the fields the model stores.

    Required: ``instance_id`` and ``service`` (non-empty strings). Optional: ``host``, ``pid``,
    ``uptime``, ``calls_served``, ``interval`` (default :data:`DEFAULT_INTERVAL`). Unknown keys
    are kept in ``payload`` only. Raises :class:`HeartbeatError` with a readable reason.

    >>> def why(raw):
    ...     try:
    ...         parse_heartbeat(raw)
    ...     except HeartbeatError as error:
    ...         return str(error)
    >>> why(b"not json")
    'body is not valid JSON: Expecting value (char 0)'
    >>> why(b"[1, 2]")
    'body must be a JSON object, got list'
    >>> why(b'{"instance_id": "x", "service": "s", "pid": "seven"}')
    "'pid' must be a whole number >= 0, got 'seven'"
    >>> why(b'{"service": "s"}')
    "'instance_id' is required (a non-empty string)"
    >>> why(b'{"instance_id": "x", "service": "s", "interval": 0}')
    "'interval' must be > 0, got 0"
    """
    if len(raw) > MAX_BODY_BYTES:
        raise HeartbeatError("body is larger than %d bytes" % MAX_BODY_BYTES)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise HeartbeatError("body is not valid JSON: %s" % _json_reason(error)) from None
    if not isinstance(data, dict):
        raise HeartbeatError("body must be a JSON object, got %s" % type(data).__name__)
    interval = _number(data, "interval", DEFAULT_INTERVAL)
    if not interval > 0:
        raise HeartbeatError("'interval' must be > 0, got %r" % data.get("interval"))
    return {
        "instance_id": _text(data, "instance_id", required=True),
        "service": _text(data, "service", required=True),
        "host": _text(data, "host"),
        "pid": _whole(data, "pid"),
        "uptime": _number(data, "uptime", 0.0),
        "calls_served": _whole(data, "calls_served"),
        "interval": interval,
        "payload": json.dumps(data, sort_keys=True, indent=2),
    }


def is_stale(last_beat, interval, now):
    """True once :data:`STALE_AFTER_MISSED_BEATS` beats are overdue since ``last_beat``.

    An instance that never beat is stale; a missing or bad interval counts as the default.

    >>> t0 = datetime.datetime(2025, 1, 1, 12, 0, 0)
    >>> is_stale(t0, 30, t0 + datetime.timedelta(seconds=90))
    False
    >>> is_stale(t0, 30, t0 + datetime.timedelta(seconds=91))
    True
    >>> is_stale(None, 30, t0)
    True
    """
    if not last_beat:
        return True
    return now - last_beat > stale_after(interval)


def stale_after(interval):
    """How long after its last beat an instance with this interval turns stale.

    >>> stale_after(10)
    datetime.timedelta(seconds=30)
    >>> stale_after(0) == stale_after(None) == datetime.timedelta(seconds=90)
    True
    """
    if not interval or not interval > 0:
        interval = DEFAULT_INTERVAL
    return datetime.timedelta(seconds=STALE_AFTER_MISSED_BEATS * interval)


def _json_reason(error):
    # json's messages end with "line 1 column 1 (char 0)"; the char offset is enough
    message = getattr(error, "msg", None) or str(error)
    pos = getattr(error, "pos", None)
    return "%s (char %s)" % (message, pos) if pos is not None else message


def _text(data, key, required=False):
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise HeartbeatError("%r is required (a non-empty string)" % key)
        return ""
    if not isinstance(value, str):
        raise HeartbeatError("%r must be a string, got %r" % (key, value))
    if len(value) > MAX_TEXT_LENGTH:
        raise HeartbeatError("%r is longer than %d characters" % (key, MAX_TEXT_LENGTH))
    return value


def _whole(data, key):
    value = data.get(key)
    if value is None:
        return 0
    # bool is an int in Python; true/false is not a pid
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HeartbeatError("%r must be a whole number >= 0, got %r" % (key, value))
    return value


def _number(data, key, default):
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HeartbeatError("%r must be a number, got %r" % (key, value))
    if value < 0:
        raise HeartbeatError("%r must be >= 0, got %r" % (key, value))
    return float(value)

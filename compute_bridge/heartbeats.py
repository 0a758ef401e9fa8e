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
...                        b'"uptime": 12.5, "calls_served": 3, "interval": 30.0, '
...                        b'"broker_connected": false, "services": ["compute", "notify"]}')
>>> beat["instance_id"], beat["pid"], beat["interval"], beat["host"]
('ab12', 7, 30.0, '')
>>> beat["broker_state"], beat["services"]
('disconnected', 'compute, notify')
"""

import datetime
import json
import math
import unicodedata

SECRET_HEADER = "X-Heartbeat-Secret"
SECRET_ENV_VAR = "COMPUTE_BRIDGE_HEARTBEAT_SECRET"
SECRET_PARAM = "compute_bridge.heartbeat_secret"

# A beat is a few hundred bytes; anything much larger is not a heartbeat, and reading it would
# let an unauthenticated caller make the server buffer arbitrary amounts of data.
MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_LENGTH = 255  # longest service name, host or instance id we keep
MAX_SERVICES = 32  # service names in one beat: a `nameko run` process hosts a handful
# Unicode categories refused in texts: control (NUL, which PostgreSQL cannot store, escape
# sequences), format (bidi overrides and isolates, zero-width characters, which reorder or hide
# the text shown next to them), surrogates (not encodable in UTF-8), private use and unassigned,
# and the line and paragraph separators. A name, host or id never needs any of them.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# The services' default (services/settings.py DEFAULT_HEARTBEAT_INTERVAL) when a beat omits it.
DEFAULT_INTERVAL = 30.0
# Upper bounds of the numbers a beat reports. Each is far above anything real, and keeps the
# arithmetic done on the value in range: the stale cutoff (last beat - 3 intervals) in Python's
# timedelta and PostgreSQL's timestamp, the rounding of uptime to one decimal.
MAX_INTERVAL = 24 * 3600.0  # seconds: a beat a day is no heartbeat any more
MAX_UPTIME = 100 * 365.25 * 24 * 3600  # seconds: a century
MAX_PID = 2**22  # Linux's PID_MAX_LIMIT
MAX_CALLS_SERVED = 2**53  # every whole number up to here is exact in a float column
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
    ``uptime``, ``calls_served``, ``interval`` (default :data:`DEFAULT_INTERVAL`), each within
    its ``MAX_*`` bound, ``broker_connected`` (true or false; absent: unknown) and ``services``
    (the names of the services the process runs). Texts must not hold
    :data:`UNSAFE_CATEGORIES` characters. Unknown keys are kept in ``payload`` only. Raises
    :class:`HeartbeatError` with a readable reason.

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
    >>> why(b'{"instance_id": "x", "service": "s", "interval": 1e11}')
    "'interval' must be <= 86400, got 100000000000.0"
    >>> why(b'{"instance_id": "x", "service": "s", "uptime": 1' + b"0" * 400 + b"}")[:31]
    "'uptime' must be <= 3.15576e+09"
    >>> why(b'{"instance_id": "x", "service": "s\\\\u202e"}')
    "'service' must not contain control or formatting characters"
    >>> why(b'{"instance_id": "x", "service": "s", "nested": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    'body is nested too deeply'
    """
    if len(raw) > MAX_BODY_BYTES:
        raise HeartbeatError("body is larger than %d bytes" % MAX_BODY_BYTES)
    try:
        data = json.loads(raw)
        # indent: the pure-Python encoder, which recurses deeper than the C decoder does
        payload = json.dumps(data, sort_keys=True, indent=2)
    except RecursionError:
        raise HeartbeatError("body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise HeartbeatError("body is not valid JSON: %s" % _json_reason(error)) from None
    if not isinstance(data, dict):
        raise HeartbeatError("body must be a JSON object, got %s" % type(data).__name__)
    interval = _number(data, "interval", DEFAULT_INTERVAL, MAX_INTERVAL)
    if not interval > 0:
        raise HeartbeatError("'interval' must be > 0, got %r" % data.get("interval"))
    return {
        "instance_id": _text(data, "instance_id", required=True),
        "service": _text(data, "service", required=True),
        "host": _text(data, "host"),
        "pid": _whole(data, "pid", MAX_PID),
        "uptime": _number(data, "uptime", 0.0, MAX_UPTIME),
        "calls_served": _whole(data, "calls_served", MAX_CALLS_SERVED),
        "interval": interval,
        "broker_state": _broker_state(data),
        "services": _names(data, "services"),
        "service_calls": _calls_by_service(data),
        "payload": payload,
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
    >>> stale_after(1e14) == stale_after(MAX_INTERVAL)
    True
    """
    if not interval or not interval > 0:
        interval = DEFAULT_INTERVAL
    # a stored interval beyond the bound (imported, written in SQL) must not overflow timedelta
    interval = min(interval, MAX_INTERVAL)
    return datetime.timedelta(seconds=STALE_AFTER_MISSED_BEATS * interval)


def calls_per_minute(previous_calls, previous_uptime, calls, uptime):
    """Calls per minute between two beats of one instance, timed by the instance's own uptime:
    when Odoo receives a beat says little of when it was sent (beats held up while Odoo was busy
    arrive together). 0 when it cannot be told (first beat, restart).

    >>> calls_per_minute(10, 100.0, 40, 130.0)
    60.0
    >>> calls_per_minute(10, 100.0, 5, 130.0)  # restarted: its counts began again
    0.0
    >>> calls_per_minute(10, 100.0, 40, 100.0)
    0.0
    """
    if previous_uptime is None or uptime <= previous_uptime or calls < previous_calls:
        return 0.0
    return (calls - previous_calls) * 60.0 / (uptime - previous_uptime)


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
    return _checked_text(key, value)


def _checked_text(key, value):
    if not isinstance(value, str) or not value:
        raise HeartbeatError("%r must be a non-empty string, got %r" % (key, value))
    if len(value) > MAX_TEXT_LENGTH:
        raise HeartbeatError("%r is longer than %d characters" % (key, MAX_TEXT_LENGTH))
    if any(unicodedata.category(char) in UNSAFE_CATEGORIES for char in value):
        raise HeartbeatError("%r must not contain control or formatting characters" % key)
    return value


def _names(data, key):
    """A list of names, stored as one text: "compute, notify"."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, list) or len(value) > MAX_SERVICES:
        raise HeartbeatError("%r must be a list of at most %d names" % (key, MAX_SERVICES))
    return ", ".join(_checked_text(key, name) for name in value)


def _calls_by_service(data):
    """The workers each service of the process ran, as one text: "compute: 12, notify: 12".

    >>> _calls_by_service({"calls_by_service": {"notify": 2, "compute": 3}})
    'compute: 3, notify: 2'
    """
    value = data.get("calls_by_service")
    if value is None:
        return ""
    if not isinstance(value, dict) or len(value) > MAX_SERVICES:
        raise HeartbeatError("'calls_by_service' must map at most %d names to counts"
                             % MAX_SERVICES)
    return ", ".join("%s: %d" % (_checked_text("calls_by_service", name),
                                 _whole(value, name, MAX_CALLS_SERVED))
                     for name in sorted(value))


def _broker_state(data):
    """"connected", "disconnected", or False when the beat does not say (older services)."""
    value = data.get("broker_connected")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HeartbeatError("'broker_connected' must be true or false, got %r" % (value,))
    return "connected" if value else "disconnected"


def _whole(data, key, maximum):
    value = data.get(key)
    if value is None:
        return 0
    # bool is an int in Python; true/false is not a pid
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HeartbeatError("%r must be a whole number >= 0, got %r" % (key, value))
    if value > maximum:
        raise HeartbeatError("%r must be <= %d, got %d" % (key, maximum, value))
    return value


def _number(data, key, default, maximum):
    value = data.get(key)
    if value is None:
        return default
    # an int is always finite (math.isfinite would overflow on 10**400)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))):
        raise HeartbeatError("%r must be a number, got %r" % (key, value))
    if value < 0:
        raise HeartbeatError("%r must be >= 0, got %r" % (key, value))
    if value > maximum:
        raise HeartbeatError("%r must be <= %g, got %r" % (key, maximum, value))
    return float(value)

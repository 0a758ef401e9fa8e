"""Where the broker is and how long a call may take: read in one place.

Order of precedence, first found wins:

``COMPUTE_BRIDGE_BROKER_URL`` (environment)
    The broker URL, e.g. ``pyamqp://user:password@rabbitmq:5672/vhost``. Meant for deployments
    where the secret lives in the environment, not in the database; Settings shows it is set.
``compute_bridge.broker_url`` (system parameter)
    Set from Settings. Default :data:`DEFAULT_BROKER_URL`.
``compute_bridge.rpc_timeout`` (system parameter)
    Seconds a call, or a whole batch, may take from start to end: connecting included.
    Default :data:`DEFAULT_RPC_TIMEOUT`.

>>> cfg = read_config({"compute_bridge.rpc_timeout": "2.5"}.get, {})
>>> cfg.broker_url, cfg.timeout, cfg.broker_url_from_env
('pyamqp://guest:guest@localhost', 2.5, False)
>>> read_config({}.get, {"COMPUTE_BRIDGE_BROKER_URL": "pyamqp://u:p@rabbit"}).broker_url
'pyamqp://u:p@rabbit'
"""

import collections
import math
import urllib.parse

BROKER_URL_ENV_VAR = "COMPUTE_BRIDGE_BROKER_URL"
BROKER_URL_PARAM = "compute_bridge.broker_url"
RPC_TIMEOUT_PARAM = "compute_bridge.rpc_timeout"
DEFAULT_BROKER_URL = "pyamqp://guest:guest@localhost"
DEFAULT_RPC_TIMEOUT = 5.0  # seconds; the compute service answers in milliseconds
MASK = "***"


class MaskedPassword(ValueError):
    """A URL with the masked password (``***``) that :func:`unmask_url` cannot fill in."""


BridgeConfig = collections.namedtuple(
    "BridgeConfig", ["broker_url", "timeout", "broker_url_from_env"]
)
BridgeConfig.__doc__ = """Everything a call needs. ``broker_url_from_env`` is True when the
environment variable overrides the system parameter."""


def read_config(get_param, environ):
    """Return a :class:`BridgeConfig` from the environment, then ``get_param(key)``, then defaults.

    ``get_param`` is any ``key -> value or None`` callable (in Odoo:
    ``env["ir.config_parameter"].sudo().get_param``); ``environ`` a mapping (``os.environ``).
    An unreadable or non-positive timeout falls back to the default rather than disabling it:
    a call without a timeout could hang an Odoo worker forever.

    >>> read_config({"compute_bridge.rpc_timeout": "nan"}.get, {}).timeout
    5.0
    """
    env_url = (environ.get(BROKER_URL_ENV_VAR) or "").strip()
    param_url = (get_param(BROKER_URL_PARAM) or "").strip()
    return BridgeConfig(
        broker_url=env_url or param_url or DEFAULT_BROKER_URL,
        timeout=_parse_timeout(get_param(RPC_TIMEOUT_PARAM)),
        broker_url_from_env=bool(env_url),
    )


def _parse_timeout(raw):
    try:
        timeout = float(raw)
    except (TypeError, ValueError):
        return DEFAULT_RPC_TIMEOUT
    if not math.isfinite(timeout) or timeout <= 0:
        return DEFAULT_RPC_TIMEOUT
    return timeout


def mask_url(url):
    """The URL with its password replaced, safe for logs, errors and notifications.

    >>> mask_url("pyamqp://guest:guest@localhost:5672/vhost")
    'pyamqp://guest:***@localhost:5672/vhost'
    >>> mask_url("pyamqp://localhost")
    'pyamqp://localhost'
    >>> mask_url("amqp://user:p%40ss@host?connect_timeout=2")
    'amqp://user:***@host?connect_timeout=2'
    """
    try:
        parts = urllib.parse.urlsplit(url or "")
        password = parts.password
    except ValueError:  # e.g. an invalid port: show nothing we cannot parse
        return MASK
    if password is None:
        return url
    return _with_password(parts, MASK)


def scrub_password(text, url):
    """``text`` (a library's error message, say) without ``url``'s password, even unquoted.

    >>> scrub_password("bad login pyamqp://u:p%40ss@h (p@ss)", "pyamqp://u:p%40ss@h")
    'bad login pyamqp://u:***@h (***)'
    """
    if url:
        text = text.replace(url, mask_url(url))
    try:
        password = urllib.parse.urlsplit(url or "").password
    except ValueError:  # unparseable (e.g. a stray '['): mask_url hid the whole URL above
        password = None
    for secret in sorted({password, urllib.parse.unquote(password or "")} - {"", None},
                         key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _with_password(parts, password):
    """``parts`` (a ``urlsplit`` result with a password) as a URL with ``password`` instead."""
    userinfo, _at, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc="%s:%s@%s" % (user, password, hostinfo)))


def unmask_url(url, stored_url):
    """``url`` as submitted from Settings, with a masked password put back from ``stored_url``.

    Settings shows the stored URL masked (:func:`mask_url`), so the password can be written but
    never read back; a form saved or tested as it was shown sends the mask back, meaning "keep
    the stored password". It is put back only for the same user at the same host and port: a
    URL edited to point elsewhere never receives the stored password (:class:`MaskedPassword`).

    >>> stored = "pyamqp://u:p%40ss@rabbit:5672/vhost"
    >>> unmask_url(mask_url(stored), stored)
    'pyamqp://u:p%40ss@rabbit:5672/vhost'
    >>> unmask_url("pyamqp://u:***@rabbit:5672/other?heartbeat=30", stored)
    'pyamqp://u:p%40ss@rabbit:5672/other?heartbeat=30'
    >>> unmask_url("pyamqp://u:new@elsewhere", stored)  # a typed password is taken as typed
    'pyamqp://u:new@elsewhere'
    >>> try:
    ...     unmask_url("pyamqp://u:***@elsewhere:5672/vhost", stored)
    ... except MaskedPassword as error:
    ...     print(error)
    the URL's password is masked and its user or host changed
    """
    if url == mask_url(stored_url):
        return stored_url
    parts = urllib.parse.urlsplit(url or "")
    if parts.password != MASK:
        return url
    try:
        stored = urllib.parse.urlsplit(stored_url or "")
        same_account = stored.password is not None and (
            (parts.username, parts.hostname, parts.port)
            == (stored.username, stored.hostname, stored.port)
        )
    except ValueError:  # an invalid port in either URL
        same_account = False
    if not same_account:
        raise MaskedPassword("the URL's password is masked and its user or host changed")
    return _with_password(parts, stored.password)

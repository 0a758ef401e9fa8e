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
import re
import urllib.parse

BROKER_URL_ENV_VAR = "COMPUTE_BRIDGE_BROKER_URL"
BROKER_URL_PARAM = "compute_bridge.broker_url"
RPC_TIMEOUT_PARAM = "compute_bridge.rpc_timeout"
DEFAULT_BROKER_URL = "pyamqp://guest:guest@localhost"
# Seconds for a whole call or batch (one deadline): a few thousand records on a small machine,
# well below Odoo's default limit_time_real (120 s).
DEFAULT_RPC_TIMEOUT = 15.0
MASK = "***"
FAILOVER_SEPARATOR = ";"  # kombu.Connection tries the URLs of "url1;url2" in turn
MIN_SCRUBBED_LENGTH = 4  # characters


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
    A timeout :func:`check_rpc_timeout` refuses falls back to the default rather than disabling
    it: a call without a timeout could hang an Odoo worker forever.

    >>> read_config({"compute_bridge.rpc_timeout": "nan"}.get, {}).timeout
    15.0
    >>> read_config({"compute_bridge.rpc_timeout": "1e9"}.get, {}).timeout
    15.0
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
        return check_rpc_timeout(raw)
    except InvalidSetting:  # unset, or stored before the rule: the default, never no timeout
        return DEFAULT_RPC_TIMEOUT


def mask_url(url):
    """The URL with its password replaced, safe for logs, errors and notifications.

    Read as text, not parsed: a password with ``/``, ``#`` or ``?`` unencoded breaks a URL
    parser but must stay hidden all the same. Everything between the user's ``:`` and the last
    ``@`` is the password; each URL of a failover list (``url1;url2``) is masked.

    >>> mask_url("pyamqp://guest:guest@localhost:5672/vhost")
    'pyamqp://guest:***@localhost:5672/vhost'
    >>> mask_url("pyamqp://localhost")
    'pyamqp://localhost'
    >>> mask_url("amqp://user:p%40ss@host?connect_timeout=2")
    'amqp://user:***@host?connect_timeout=2'
    >>> mask_url("pyamqp://cb:Zm9v/YmFy+cXV4=@rabbitmq:5672/vh")
    'pyamqp://cb:***@rabbitmq:5672/vh'
    >>> mask_url("pyamqp://cb:one@rabbit-1/v;pyamqp://cb:two@rabbit-2/v")
    'pyamqp://cb:***@rabbit-1/v;pyamqp://cb:***@rabbit-2/v'
    >>> mask_url("guest:s3cret@rabbit")
    'guest:***@rabbit'
    """
    if not url:
        return url
    return FAILOVER_SEPARATOR.join(
        "%s%s:%s@%s" % (prefix, user, MASK, host) if password is not None else one_url
        for one_url in url.split(FAILOVER_SEPARATOR)
        for prefix, user, password, host in [_credentials(one_url)]
    )


def scrub_password(text, url):
    """``text`` (a library's error message, say) without ``url``'s passwords, even unquoted.

    >>> scrub_password("bad login pyamqp://u:p%40ss@h (p@ss)", "pyamqp://u:p%40ss@h")
    'bad login pyamqp://u:***@h (***)'
    >>> scrub_password("refused: first, second", "pyamqp://u:first@h1;pyamqp://u:second@h2")
    'refused: ***, ***'
    >>> scrub_password("Server unexpectedly closed", "pyamqp://u:p@h")  # too short to hunt for
    'Server unexpectedly closed'
    """
    if url:
        text = text.replace(url, mask_url(url))
    secrets = set()
    for one_url in (url or "").split(FAILOVER_SEPARATOR):
        password = _credentials(one_url)[2]
        if password:
            secrets.update((password, urllib.parse.unquote(password)))
    # A password of a few letters would mask them inside words ("unex***ectedly"), both
    # garbling the text and pointing at the password; URLs quoting it are masked above.
    long_enough = [secret for secret in secrets if len(secret) >= MIN_SCRUBBED_LENGTH]
    for secret in sorted(long_enough, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _credentials(url):
    """``(prefix, user, password, host and the rest)`` of one URL, ``password`` None when
    there is none: the password runs from the ``:`` after the user to the last ``@``."""
    scheme, separator, rest = url.partition("://")
    prefix = scheme + separator if separator else ""
    if not separator:
        rest = url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return prefix, None, None, rest
    user, _colon, password = userinfo.partition(":")
    return prefix, user, password, host


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
    try:
        parts = urllib.parse.urlsplit(url or "")
        password = parts.password
    except ValueError:  # unparsable (a stray "["): check_broker_url says why, not a traceback
        return url
    if password != MASK:
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


# What Settings, the System Parameters list and XML-RPC may store: checked where the value is
# written (the ir.config_parameter model), so a call never meets a URL or timeout it cannot use.

# The schemes kombu reads as AMQP over py-amqp, and whether each one means TLS.
BROKER_URL_SCHEMES = {"pyamqp": False, "amqp": False, "pyamqps": True, "amqps": True}
# Far above any real URL or failover list, far below a paste gone wrong.
MAX_BROKER_URL_LENGTH = 4096  # characters
MAX_VHOST_BYTES = 255  # AMQP 0-9-1 sends the virtual host as a short string
MIN_PORT, MAX_PORT = 1, 65535
SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")  # RFC 3986, section 3.1
# A round trip through the broker takes milliseconds; below this every call would time out.
MIN_RPC_TIMEOUT = 0.1  # seconds
# Half of Odoo's default limit_time_real (120 s): a call that times out still leaves its request
# the time to mark the records failed and answer before the watchdog kills the worker.
MAX_RPC_TIMEOUT = 60.0  # seconds


class InvalidSetting(ValueError):
    """A broker URL or timeout the bridge cannot use.

    ``str()`` is a readable English reason (for logs and scripts); ``code`` and ``params`` let
    Odoo show the same reason translated. Neither ever holds the URL's password.
    """

    def __init__(self, code, message, **params):
        super().__init__(message % params if params else message)
        self.code = code
        self.params = params


def check_broker_url(url):
    """Return ``url`` stripped if kombu can connect with it, else raise :class:`InvalidSetting`.

    An AMQP URL (``pyamqp``, ``amqp``, or ``pyamqps``/``amqps`` for TLS) with a host, a port from 1
    to 65535 and a virtual host AMQP can send, or a kombu failover list of such URLs separated
    by ``;``. It is parsed as kombu parses it (``kombu.utils.url.url_to_parts``).

    >>> check_broker_url(" pyamqp://guest:guest@rabbit:5672/%2Fprod ")
    'pyamqp://guest:guest@rabbit:5672/%2Fprod'
    >>> check_broker_url("amqps://u:p@rabbit-1;amqps://u:p@rabbit-2:5671")
    'amqps://u:p@rabbit-1;amqps://u:p@rabbit-2:5671'
    >>> for bad in ("http://localhost:5672", "redis://r:6379/0", "abc", "pyamqp://u:p@:5672/",
    ...             "pyamqp://rabbit:99999", "pyamqp://rabbit:0", "pyamqp://rabbit;",
    ...             "pyamqp://rabbit/" + "v" * 256, "pyamqp://rab bit", "pyamqp://[::1", "",
    ...             "guest:s3cret@rabbit://", "pyamqp://u:Zm9v/YmFy+cXV4=@rabbit:5672/"):
    ...     try:
    ...         check_broker_url(bad)
    ...     except InvalidSetting as error:
    ...         print("%s: %s" % (error.code, error))
    scheme: the scheme "http" is not an AMQP one: use one of pyamqp, amqp, pyamqps, amqps
    scheme: the scheme "redis" is not an AMQP one: use one of pyamqp, amqp, pyamqps, amqps
    no_scheme: the broker URL has no scheme: write it as pyamqp://user:password@host:5672/vhost
    host: the broker URL names no host
    port: the broker URL's port must be a whole number from 1 to 65535
    port: the broker URL's port must be a whole number from 1 to 65535
    failover_empty: the failover list (URLs separated by ";") has an empty entry
    vhost: the virtual host is 256 bytes long; AMQP allows at most 255
    space: the broker URL contains a space or a control character
    syntax: the broker URL cannot be read as a URL
    empty: the broker URL is empty
    no_scheme: the broker URL has no scheme: write it as pyamqp://user:password@host:5672/vhost
    userinfo: the broker URL's user or password holds / ? or # unencoded: percent-encode them
    """
    url = (url or "").strip()
    if not url:
        raise InvalidSetting("empty", "the broker URL is empty")
    if len(url) > MAX_BROKER_URL_LENGTH:
        raise InvalidSetting("too_long", "the broker URL is longer than %(limit)d characters",
                               limit=MAX_BROKER_URL_LENGTH)
    if any(char.isspace() or not char.isprintable() for char in url):
        raise InvalidSetting("space", "the broker URL contains a space or a control character")
    for one_url in url.split(FAILOVER_SEPARATOR):
        _check_one_broker_url(one_url)
    return url


def _check_one_broker_url(url):
    from kombu.utils.url import url_to_parts  # kombu only once a URL is checked, as for calls

    if not url:
        raise InvalidSetting("failover_empty", 'the failover list (URLs separated by "%(sep)s") '
                               "has an empty entry", sep=FAILOVER_SEPARATOR)
    userinfo = _credentials(url)
    if userinfo[2] is not None and any(char in userinfo[1] + userinfo[2] for char in "/?#"):
        # Unencoded, these end the URL's user part early: the password would be read as a host
        raise InvalidSetting("userinfo", "the broker URL's user or password holds / ? or # "
                             "unencoded: percent-encode them")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if not SCHEME_RE.match(scheme):  # nor is "user:password@host" before a "://" ever shown
        raise InvalidSetting("no_scheme", "the broker URL has no scheme: write it as "
                               "pyamqp://user:password@host:5672/vhost")
    if scheme not in BROKER_URL_SCHEMES:
        raise InvalidSetting("scheme", 'the scheme "%(scheme)s" is not an AMQP one: use one '
                               "of %(schemes)s", scheme=scheme,
                               schemes=", ".join(BROKER_URL_SCHEMES))
    try:
        split = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        raise InvalidSetting("syntax", "the broker URL cannot be read as a URL") from None
    try:
        port = split.port
    except ValueError:  # not a number, or beyond 65535
        port = MIN_PORT - 1
    if port is not None and not MIN_PORT <= port <= MAX_PORT:
        raise InvalidSetting("port", "the broker URL's port must be a whole number from "
                               "%(low)d to %(high)d", low=MIN_PORT, high=MAX_PORT)
    parts = url_to_parts(url)  # the host and virtual host exactly as kombu will send them
    if not parts.hostname:
        raise InvalidSetting("host", "the broker URL names no host")
    try:
        parts.hostname.encode("idna")  # what the socket does with it: labels of 1-63 characters
    except UnicodeError:
        raise InvalidSetting("host_invalid", "the broker URL's host name is not valid") from None
    vhost_bytes = len((parts.path or "").encode("utf-8"))
    if vhost_bytes > MAX_VHOST_BYTES:
        raise InvalidSetting("vhost", "the virtual host is %(length)d bytes long; AMQP allows "
                               "at most %(limit)d", length=vhost_bytes, limit=MAX_VHOST_BYTES)


def check_rpc_timeout(value):
    """Return ``value`` as seconds (a float) if it is a usable timeout, else raise
    :class:`InvalidSetting`: from :data:`MIN_RPC_TIMEOUT` to :data:`MAX_RPC_TIMEOUT`.

    >>> check_rpc_timeout("2.5"), check_rpc_timeout(60)
    (2.5, 60.0)
    >>> for bad in ("-5", "0", "0.01", "60.5", "1e9", "nan", "inf", "abc", None):
    ...     try:
    ...         check_rpc_timeout(bad)
    ...     except InvalidSetting as error:
    ...         print(repr(bad), "refused:", error)
    '-5' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    '0' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    '0.01' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    '60.5' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    '1e9' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    'nan' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    'inf' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    'abc' refused: the RPC timeout must be a number of seconds from 0.1 to 60
    None refused: the RPC timeout must be a number of seconds from 0.1 to 60
    >>> try:
    ...     check_rpc_timeout(None)
    ... except InvalidSetting as error:
    ...     print(error.code, error.params)
    rpc_timeout {'low': 0.1, 'high': 60.0}
    """
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = math.nan
    if not MIN_RPC_TIMEOUT <= timeout <= MAX_RPC_TIMEOUT:  # NaN compares false: refused too
        raise InvalidSetting("rpc_timeout", "the RPC timeout must be a number of seconds "
                                "from %(low)g to %(high)g",
                                low=MIN_RPC_TIMEOUT, high=MAX_RPC_TIMEOUT)
    return timeout

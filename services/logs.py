"""How the services log: time and level on every line, one line per event, no secret.

`nameko run` configures logging before it imports the services: from the config file's LOGGING
when there is one, else with `logging.basicConfig(format="%(message)s")`, which prints neither
time nor level. `use_default_format()` gives that bare handler our format and LOG_LEVEL, and
leaves any LOGGING configuration an operator wrote alone.
"""

import logging
import re
import urllib.parse

from services.settings import DEFAULT_LOG_LEVEL, LOG_LEVEL_KEY, setting

_logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Text quoted from a caller (a notify message, say) is cut to this many characters in a log line.
MAX_LOGGED_CHARS = 1000

# Records logged with a traceback that says nothing their message and exception do not, each as
# (logger, start of the message). They are logged on one line, with the exception's message.
ONE_LINE_RECORDS = (
    # nameko logs an exception that the entrypoint declares as expected (the caller's mistake:
    # a refused operand) at WARNING with a traceback into our own checks
    ("nameko.containers", "(expected) error handling worker"),
    # kombu, when the broker goes away: the traceback runs through kombu's and amqp's internals
    ("kombu.mixins", "Connection to broker lost"),
)

_PROBE = "probe"


def _is_bare(handler):
    formatter = handler.formatter or logging.Formatter()
    return formatter.format(logging.makeLogRecord({"msg": _PROBE})) == _PROBE


def use_default_format():
    """Give nameko's bare default handler (no LOGGING configuration) time, level and LOG_LEVEL."""
    root = logging.getLogger()
    bare = [handler for handler in root.handlers if _is_bare(handler)]
    if not bare or len(bare) != len(root.handlers):
        return  # no handler yet, or a configuration of someone's own
    for handler in bare:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = str(setting(None, LOG_LEVEL_KEY, DEFAULT_LOG_LEVEL)).upper()
    try:
        root.setLevel(level)
    except ValueError:
        _logger.warning("%s=%r is not a log level; using %s", LOG_LEVEL_KEY, level,
                        DEFAULT_LOG_LEVEL)
        root.setLevel(DEFAULT_LOG_LEVEL)


class OnOneLine(logging.Filter):
    """Logs the records whose message starts with `prefix` without their traceback, with the
    exception's type and message when the message does not already say it."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        if record.exc_info and str(record.msg).startswith(self.prefix):
            text = record.getMessage()
            error = record.exc_info[1]
            if str(error) not in text:
                text += " (%s: %s)" % (type(error).__name__, error)
            record.msg, record.args = text, None
            record.exc_info = record.exc_text = None
        return True


def tracebacks_off():
    """Install OnOneLine for each of ONE_LINE_RECORDS (once)."""
    for name, prefix in ONE_LINE_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OnOneLine) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(OnOneLine(prefix))


def quoted(value, limit=MAX_LOGGED_CHARS):
    """`value` as one log-safe line: control and bidi characters escaped (repr), at most `limit`
    characters, and how many were dropped."""
    text = value if isinstance(value, str) else repr(value)
    dropped = max(0, len(text) - limit)
    text = text[:limit]
    if not text.isprintable():
        text = repr(text)
    if dropped:
        text += "... (%d more characters)" % dropped
    return text


FAILOVER_SEPARATOR = ";"  # kombu's failover form of a broker URL: url1;url2;...


def without_password(text, url):
    """`text` (an error message, say) with the password of `url` (of each URL of kombu's
    failover form), if it has one, masked."""
    for part in url.split(FAILOVER_SEPARATOR):
        password = urllib.parse.urlsplit(part).password
        for form in {password, urllib.parse.unquote(password or "")} - {None, ""}:
            text = text.replace(form, "**")
    return text


def masked_url(url):
    """`url` with the password of each URL of kombu's failover form masked (kombu's
    maybe_sanitize_url masks only the first)."""
    return without_password(url, url)


# The password of any URL in a line: scheme://user:PASSWORD@ (up to the last "@" before the
# next separator, as urllib splits a URL whose password holds an unquoted "@").
URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s;]*:)[^\s;]*(?=@)")
MASK = "**"


class PasswordsMasked(logging.Filter):
    """Masks the password of every URL in a record's message. nameko and kombu log the broker
    URL they fail to reach with kombu's maybe_sanitize_url, which masks the first URL of a
    failover list only: the others would print the cluster's password in clear."""

    def filter(self, record):
        text = record.getMessage()
        if "://" in text:
            masked = URL_PASSWORD.sub(r"\1" + MASK, text)
            if masked != text:
                record.msg, record.args = masked, None
        return True


def passwords_masked():
    """Install PasswordsMasked on the root logger's handlers (once): every record of every
    logger passes through them, whoever logs it."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, PasswordsMasked) for f in handler.filters):
            handler.addFilter(PasswordsMasked())

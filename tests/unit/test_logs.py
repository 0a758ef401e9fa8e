"""services/logs.py: the default format, one-line expected errors, capped and masked text."""

import io
import logging
import sys

import pytest

from services.logs import (
    LOG_FORMAT,
    MAX_LOGGED_CHARS,
    OnOneLine,
    masked_url,
    passwords_masked,
    quoted,
    use_default_format,
    without_password,
)


@pytest.fixture
def nameko_run_logging(monkeypatch):
    """() -> the root logger as `nameko run` without LOGGING leaves it: logging.basicConfig(INFO,
    "%(message)s"), one bare handler (into a StringIO). Called in the test's body, once pytest
    has added its own handlers."""
    root = logging.getLogger()

    def bare_root():
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(logging.Formatter("%(message)s"))
        monkeypatch.setattr(root, "handlers", [handler])
        monkeypatch.setattr(root, "level", logging.INFO)
        return root

    return bare_root


def test_nameko_runs_bare_handler_gets_time_and_level(nameko_run_logging, monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    root = nameko_run_logging()
    use_default_format()
    logging.getLogger("services.x").info("hello")
    [handler] = root.handlers
    line = handler.stream.getvalue()
    assert LOG_FORMAT.startswith("%(asctime)s %(levelname)s %(name)s")
    assert line.endswith(" INFO services.x hello\n") and line[:4].isdigit(), line
    assert root.level == logging.INFO


def test_log_level_from_the_environment(nameko_run_logging, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "debug")
    root = nameko_run_logging()
    use_default_format()
    assert root.level == logging.DEBUG


def test_a_bad_log_level_is_said_and_replaced(nameko_run_logging, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    root = nameko_run_logging()
    use_default_format()
    assert root.level == logging.INFO
    assert " WARNING services.logs LOG_LEVEL='CHATTY' is not a log level; using INFO" in (
        root.handlers[0].stream.getvalue())


def test_an_operators_logging_configuration_is_left_alone(nameko_run_logging, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    root = nameko_run_logging()
    [handler] = root.handlers
    own = logging.Formatter("%(levelname)s %(message)s")
    handler.setFormatter(own)
    use_default_format()
    assert handler.formatter is own
    assert root.level == logging.INFO


def exc_info_of(error):
    try:
        raise error
    except type(error):
        return sys.exc_info()


def test_a_listed_record_loses_its_traceback_and_keeps_the_error():
    exc_info = exc_info_of(ConnectionResetError(104, "Connection reset by peer"))
    record = logging.makeLogRecord({"msg": "Connection to broker lost, trying %s", "args": (1,),
                                    "exc_info": exc_info})
    assert OnOneLine("Connection to broker lost").filter(record)
    assert record.exc_info is None
    assert record.getMessage() == ("Connection to broker lost, trying 1 "
                                   "(ConnectionResetError: [Errno 104] Connection reset by peer)")


def test_an_error_already_in_the_message_is_not_repeated():
    exc_info = exc_info_of(ValueError("value1 must be a finite int or float"))
    record = logging.makeLogRecord({"msg": "(expected) error handling worker %s: %s",
                                    "args": ("<ctx>", exc_info[1]), "exc_info": exc_info})
    OnOneLine("(expected) error handling worker").filter(record)
    assert record.getMessage() == (
        "(expected) error handling worker <ctx>: value1 must be a finite int or float")


def test_other_records_keep_their_traceback():
    exc_info = exc_info_of(ValueError("boom"))
    record = logging.makeLogRecord({"msg": "error handling worker %s: %s", "exc_info": exc_info})
    assert OnOneLine("(expected) error handling worker").filter(record)
    assert record.exc_info is exc_info


def test_quoted_text_is_capped_and_says_how_much_was_dropped():
    assert quoted("short") == "short"
    assert quoted("x" * MAX_LOGGED_CHARS) == "x" * MAX_LOGGED_CHARS
    assert quoted("x" * (MAX_LOGGED_CHARS + 5)) == (
        "x" * MAX_LOGGED_CHARS + "... (5 more characters)")
    assert quoted({"a": 1}) == "{'a': 1}"
    assert quoted("a\nb\u202e") == "'a\\nb\\u202e'"


@pytest.mark.parametrize("password", ["pw", "p@ss/:w%d", "p%40ss"])
def test_without_password(password):
    url = "pyamqp://guest:%s@rabbit:5672//" % password
    assert password not in without_password("cannot reach %s" % url, url)
    assert without_password("no url here", "http://odoo/hb") == "no url here"


def test_masked_url_masks_every_node_of_a_failover_url():
    url = "pyamqp://u:first@n1:5672/vh;pyamqp://u:second@n2:5672/vh"
    assert masked_url(url) == "pyamqp://u:**@n1:5672/vh;pyamqp://u:**@n2:5672/vh"


def test_every_password_of_a_failover_url_is_masked_whoever_logs_it(nameko_run_logging):
    """nameko logs the failover URL it cannot reach with kombu's maybe_sanitize_url, which
    masks the first URL's password only."""
    from kombu.utils.url import maybe_sanitize_url

    root = nameko_run_logging()
    passwords_masked()
    passwords_masked()  # once only
    assert len(root.handlers[0].filters) == 1
    url = ("pyamqp://cb:first-Secret@node1:5672/vh;pyamqp://cb:second-Secret@node2:5672/vh;"
           "pyamqp://cb:p%40ss-Secret@node3/vh")
    logging.getLogger("nameko.messaging").warning(
        "Error connecting to broker at %s (%s).", maybe_sanitize_url(url), "ECONNREFUSED")
    logging.getLogger("kombu.mixins").error("Connected to %s", url)
    text = root.handlers[0].stream.getvalue()
    assert "Secret" not in text
    assert text.count("pyamqp://cb:**@node") == 6
    assert "(ECONNREFUSED)." in text

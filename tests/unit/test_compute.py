"""compute and notify, with their dependencies mocked (nameko's worker_factory), and compute's
Notifier bound to a mock container."""

import logging
import math
import sys
from unittest.mock import Mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nameko.testing.services import worker_factory

from services import instance
from services.compute import ComputeService, InvalidOperand, add
from services.dependencies import NOTIFY_BATCH_MAX, Notifier
from services.logs import MAX_LOGGED_CHARS
from services.notify import NotifyService

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT_MAX = sys.float_info.max
FLOAT_TINY = 5e-324  # smallest positive subnormal
# The longest int Python writes out (JSON, %s); 0 would mean no limit.
MAX_DIGITS = sys.get_int_max_str_digits()
LONGEST_INT = 10**MAX_DIGITS - 1

# Text meant to fool a log reader or a UI: bidi overrides, zero-width characters, BOM.
HOSTILE_CHARACTERS = ["\u202e", "\u202d", "\u2066", "\u200b", "\u200d", "\ufeff", "\u0000"]


@pytest.fixture
def compute():
    return worker_factory(ComputeService)


@pytest.mark.parametrize(
    ("value1", "value2", "expected"),
    [
        (99999, 99999, 199998),  # the blog post's call
        (1, 2, 3),
        (0, 0, 0),
        (-5, 3, -2),
        (1.5, 2.25, 3.75),
        (1, 0.5, 1.5),
        (INT32_MAX, 1, 2**31),  # ints do not wrap at 32 bits
        (INT32_MIN, -1, -(2**31) - 1),
        (2**64, 2**64, 2**65),
        (FLOAT_MAX, 0.0, FLOAT_MAX),
        (FLOAT_TINY, FLOAT_TINY, 2 * FLOAT_TINY),
        (-0.0, 0.0, 0.0),
    ],
)
def test_valid_sums(compute, value1, value2, expected):
    assert compute.method(value1, value2) == expected


def test_the_result_keeps_the_operand_types(compute):
    assert type(compute.method(1, 2)) is int
    assert type(compute.method(1, 2.0)) is float


def test_notify_is_told_the_sum(compute):
    compute.method(99999, 99999)
    compute.notify.assert_called_once_with("Operation completed 199998")


def test_every_call_is_counted():
    compute = worker_factory(ComputeService)
    before = instance.calls_served()
    compute.method(1, 2)
    with pytest.raises(InvalidOperand):
        compute.method("1", 2)
    assert instance.calls_served() == before + 2


REFUSED = [
    "abc",
    "",
    "1",
    None,
    True,
    False,
    math.nan,
    math.inf,
    -math.inf,
    [1],
    [],
    {"a": 1},
    {},
    (1, 2),
    b"1",
    1j,
    object(),
] + HOSTILE_CHARACTERS


@pytest.mark.parametrize("bad", REFUSED, ids=repr)
@pytest.mark.parametrize("position", ["value1", "value2"])
def test_refused_operands(compute, bad, position):
    args = (bad, 1) if position == "value1" else (1, bad)
    with pytest.raises(InvalidOperand) as error:
        compute.method(*args)
    message = str(error.value)
    assert message.startswith("%s must be a finite int or float, got " % position)
    assert "(%s)" % type(bad).__name__ in message
    compute.notify.assert_not_called()
    # the worker is still good for a valid call afterwards
    assert compute.method(2, 3) == 5


def test_the_message_quotes_a_string_operand(compute):
    with pytest.raises(InvalidOperand, match=r"^value1 must be a finite int or float, "
                                             r"got 'abc' \(str\)$"):
        compute.method("abc", 1)


def test_hostile_characters_are_escaped_in_the_message(compute):
    for character in HOSTILE_CHARACTERS:
        with pytest.raises(InvalidOperand) as error:
            compute.method("1" + character + "2", 1)
        assert character not in str(error.value)


def test_a_huge_operand_is_quoted_short(compute):
    with pytest.raises(InvalidOperand) as error:
        compute.method("x" * 1_000_000, 1)
    assert len(str(error.value)) < 200


@pytest.mark.parametrize(
    ("value1", "value2"),
    [(1e308, 1e308), (-1e308, -1e308), (FLOAT_MAX, FLOAT_MAX), (10**400, 1.0), (1.0, -(10**400))],
)
def test_a_sum_beyond_the_float_range_is_refused(compute, value1, value2):
    with pytest.raises(InvalidOperand, match="value1 \\+ value2"):
        compute.method(value1, value2)
    compute.notify.assert_not_called()
    assert compute.method(1, 1) == 2


def test_the_longest_int_that_can_be_written_out_is_added(compute):
    assert MAX_DIGITS  # else Python writes out any int and there is nothing to refuse
    assert compute.method(LONGEST_INT, 0) == LONGEST_INT
    assert compute.method(-LONGEST_INT, 0) == -LONGEST_INT


@pytest.mark.parametrize(("value1", "value2"), [(LONGEST_INT, 1), (-LONGEST_INT, -1)])
def test_a_sum_too_long_to_write_out_is_refused(compute, value1, value2):
    # the reply (JSON) and the notification (%s) would both raise ValueError on it
    with pytest.raises(InvalidOperand, match=r"^value1 \+ value2 has more than %d digits"
                                             % MAX_DIGITS):
        compute.method(value1, value2)
    compute.notify.assert_not_called()
    assert compute.method(1, 1) == 2


# -- generated values ---------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=INT32_MIN - 2, max_value=INT32_MIN + 2),
    st.integers(min_value=INT32_MAX - 2, max_value=INT32_MAX + 2),
    st.floats(allow_nan=False, allow_infinity=False),
)

hostile = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(HOSTILE_CHARACTERS + ["1", "2", ".", "-"])),
    st.none(),
    st.booleans(),
    st.just(math.nan),
    st.sampled_from([math.inf, -math.inf]),
    st.lists(numbers, max_size=3),
    st.dictionaries(st.text(max_size=3), numbers, max_size=3),
    st.binary(max_size=8),
)


@given(value1=numbers, value2=numbers)
def test_generated_sums(value1, value2):
    try:
        expected = value1 + value2
    except OverflowError:
        expected = None
    if expected is None or (isinstance(expected, float) and not math.isfinite(expected)):
        with pytest.raises(InvalidOperand):
            add(value1, value2)
    else:
        assert add(value1, value2) == expected


@given(bad=hostile, good=numbers, bad_first=st.booleans())
def test_generated_hostile_values_are_refused(bad, good, bad_first):
    compute = worker_factory(ComputeService)
    args = (bad, good) if bad_first else (good, bad)
    with pytest.raises(InvalidOperand):
        compute.method(*args)
    compute.notify.assert_not_called()
    assert compute.method(1, 2) == 3


# -- notify ------------------------------------------------------------------------------------


def test_notify_logs_each_message_on_one_debug_line(caplog):
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        worker_factory(NotifyService).send("Operation completed 3")
    [record] = caplog.records
    assert (record.levelno, record.getMessage()) == (logging.DEBUG, "Operation completed 3")


def test_notify_caps_a_huge_message_and_says_how_much_it_dropped(caplog):
    size = 20_000_000
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        worker_factory(NotifyService).send("x" * size)
    [record] = caplog.records
    assert record.getMessage() == "%s... (%d more characters)" % (
        "x" * MAX_LOGGED_CHARS, size - MAX_LOGGED_CHARS)


@pytest.mark.parametrize("character", ["\n", "\r"] + HOSTILE_CHARACTERS, ids=repr)
def test_notify_escapes_what_could_forge_or_reorder_a_log_line(caplog, character):
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        worker_factory(NotifyService).send("1" + character + "2 ERROR forged")
    [record] = caplog.records
    assert character not in record.getMessage()


def test_notify_batch_is_logged_one_line_per_message(caplog):
    with caplog.at_level(logging.DEBUG, logger="services.notify"):
        worker_factory(NotifyService).on_operations_completed(["a", "b"])
    assert [record.getMessage() for record in caplog.records] == ["a", "b"]


# -- the Notifier: sends after the reply, batched, never fails the call --------------------------


@pytest.fixture
def notifier(mock_container):
    mock_container.service_name = "compute"
    mock_container.config = {}
    mock_container.shared_extensions = {}
    bound = Notifier().bind(mock_container, "notify")
    bound.via = "event"
    bound._pending = {}
    bound._batch = []
    bound._flush_scheduled = False
    bound.send_now = Mock()
    bound.send_batch = Mock()
    return bound


def test_notifier_sends_only_once_the_worker_has_its_result(notifier):
    worker_ctx = Mock(context_data={})
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.worker_result(worker_ctx, 3)
    notifier.send_batch.assert_not_called()  # batched: sent by the flush that is now scheduled
    notifier.container.spawn_managed_thread.assert_called_once_with(notifier._flush_later)
    notifier.flush()
    notifier.send_batch.assert_called_once_with(["Operation completed 3"], ("",))


def test_notifier_batches_the_messages_of_many_workers_in_one_event(notifier):
    for total in range(3):
        worker_ctx = Mock(context_data={})
        notifier.get_dependency(worker_ctx)("Operation completed %d" % total)
        notifier.worker_result(worker_ctx, total)
    notifier.container.spawn_managed_thread.assert_called_once()  # one flush for the batch
    notifier.flush()
    notifier.send_batch.assert_called_once_with(
        ["Operation completed 0", "Operation completed 1", "Operation completed 2"], ("",) * 3)


def test_notifier_sends_each_message_with_the_traceparent_of_its_worker(notifier):
    for total in range(3):
        worker_ctx = Mock(context_data={"traceparent": "trace-of-%d" % total})
        notifier.get_dependency(worker_ctx)("Operation completed %d" % total)
        notifier.worker_result(worker_ctx, total)
    notifier.flush()
    notifier.send_batch.assert_called_once_with(
        ["Operation completed 0", "Operation completed 1", "Operation completed 2"],
        ("trace-of-0", "trace-of-1", "trace-of-2"))


def test_notifier_sends_a_full_batch_at_once(notifier):
    for total in range(NOTIFY_BATCH_MAX):
        worker_ctx = Mock(context_data={})
        notifier.get_dependency(worker_ctx)("Operation completed %d" % total)
        notifier.worker_result(worker_ctx, total)
    notifier.send_batch.assert_called_once()
    assert len(notifier.send_batch.call_args.args[0]) == NOTIFY_BATCH_MAX
    assert notifier._batch == []


def test_notifier_sends_what_is_left_when_the_container_stops(notifier):
    worker_ctx = Mock(context_data={})
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.worker_result(worker_ctx, 3)
    notifier.stop()
    notifier.send_batch.assert_called_once_with(["Operation completed 3"], ("",))


def test_notifier_via_rpc_sends_each_message(notifier):
    notifier.via = "rpc"
    worker_ctx = Mock(context_data={})
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.send_now.assert_not_called()
    notifier.worker_result(worker_ctx, 3)
    notifier.send_now.assert_called_once_with(worker_ctx, "Operation completed 3")
    notifier.send_batch.assert_not_called()


def test_notifier_failure_is_logged_not_raised(notifier, caplog):
    worker_ctx = Mock(context_data={})
    notifier.send_batch.side_effect = ConnectionError("broker gone")
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.worker_result(worker_ctx, 3)
    notifier.flush()
    assert ("could not notify 1 messages via event, first 'Operation completed 3': broker gone"
            in caplog.text)
    assert "Traceback" not in caplog.text
    assert notifier._pending == {}
    assert notifier._batch == []


def test_notifier_rpc_failure_is_logged_not_raised(notifier, caplog):
    notifier.via = "rpc"
    worker_ctx = Mock(context_data={})
    notifier.send_now.side_effect = ConnectionError("broker gone")
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.worker_result(worker_ctx, 3)
    assert "could not notify 'Operation completed 3' via rpc: broker gone" in caplog.text
    assert notifier._pending == {}


def test_notifier_forgets_the_messages_of_a_torn_down_worker(notifier):
    worker_ctx = Mock(context_data={})
    notifier.get_dependency(worker_ctx)("Operation completed 3")
    notifier.worker_teardown(worker_ctx)
    assert notifier._pending == {}

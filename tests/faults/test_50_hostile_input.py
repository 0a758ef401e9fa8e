"""Hostile operands through every door: XML-RPC and JSON-RPC (``create``, ``write``,
``action_suma``, ``compute_sum``) and straight to the service (``ClusterRpcProxy``).

Whatever comes in, the caller gets either the right answer or a validation error it can read
(an XML-RPC fault code 2 / a JSON-RPC ``odoo.exceptions.ValidationError`` or ``UserError``, with a
message that is not a Python traceback and does not carry raw bidi or zero-width controls), never
an HTTP 500 or a dead worker; a valid call still works afterwards.

Each test collects every violation over a curated list plus ~150 generated examples and reports
them grouped, instead of stopping at the first: one run shows every distinct defect.

What counts as valid, per door (the contract, see tests/faults/README.rst):

- ``compute_sum(a, b)``: finite ``int``/``float`` operands, not ``bool``, whose sum is a finite
  float (it returns a float); anything else must be refused.
- the service (``compute.method``): the same, except that ints of any size stay exact ints.
- ``create``/``write`` of ``field_1``/``field_2``: finite numbers are stored as floats; Odoo's
  "no value" (``False``, ``None``, ``""``, ``[]``, ``{}``) and ``True`` and numeric strings may be
  accepted the way the ORM converts them (0.0, 1.0, ``float(s)``) or refused; what may never be
  stored is NaN or an infinity (a browser's JSON.parse cannot read it back), and anything else
  must be refused readably.
- ``action_suma`` on what was stored: ``done`` with the right sum, or ``failed`` with a readable
  error and a danger notification.
"""

import collections
import json
import math
import re

import faults_harness as harness
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.odoo

EXAMPLES = 150
INT32 = (-(2**31), 2**31 - 1)
BIDI_OR_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
NAN, INF = float("nan"), float("inf")

CURATED = [
    "", " ", "abc", "1", "1.5", " 2 ", "1e3", "nan", "inf", "-Infinity", "1e400", "0x10",
    "1_000", "\u0661\u0662", "\u202e123", "1\u200b", "\u200b", "\u2066x\u2069", "\ufeff1",
    "\U0001f600", "<b>1</b>", "'; DROP TABLE compute_operation; --", "%s%s%s", "{0}",
    None, True, False, NAN, INF, -INF,
    0, -0.0, 1, -1, 0.1, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324,
    2.2250738585072014e-308, 1e-300, INT32[0], INT32[1], INT32[0] - 1, INT32[1] + 1, 2**53 + 1,
    [], [1], [1, 2], [[]], {}, {"a": 1}, {"field_1": 1}, [None], ["1"],
]
JSON_ONLY = ["\x00", "1\x00", "\x1b[31mred", "\x07\x08", "a\x7fb", 10**30, -(10**30), 10**400,
             [10**400]]


# ---------------------------------------------------------------------------------------------
def is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(_float(value)))


def _float(value):
    try:
        return float(value)
    except OverflowError:
        return INF


def exact_sum(a, b):
    """a + b as the service computes it, or None when it must be refused."""
    if not (is_number(a) and is_number(b)):
        return None
    try:
        total = a + b
        as_float = float(total)
    except OverflowError:
        return None
    return total if math.isfinite(as_float) else None


def service_sum(a, b):
    """a + b as the service's contract has it (services/compute.py): ints of any size stay exact,
    floats must be finite, and so must a sum involving a float; None when it must be refused."""
    def valid(v):
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and math.isfinite(v))

    if not (valid(a) and valid(b)):
        return None
    try:
        total = a + b
    except OverflowError:
        return None
    return None if isinstance(total, float) and not math.isfinite(total) else total


def orm_float(value):
    """What the ORM would store, and whether the addon must, may, or must not accept it:
    ("must", x) / ("may", x) / ("refuse", None)."""
    if is_number(value):
        return "must", float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "refuse", None  # NaN, infinities, ints beyond the float range
    if value in (None, False, True, "") or value == [] or value == {}:
        return "may", float(value or 0.0)
    if isinstance(value, str):
        try:
            converted = float(value)
        except ValueError:
            return "refuse", None
        return ("may", converted) if math.isfinite(converted) else ("refuse", None)
    return "refuse", None


def category(value):
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return "float nan" if math.isnan(value) else "float inf" if math.isinf(value) else "float"
    if isinstance(value, int):
        return "int > float range" if not math.isfinite(_float(value)) else (
            "int beyond int32" if not INT32[0] <= value <= INT32[1] else "int")
    if isinstance(value, str):
        if not value:
            return "empty string"
        if re.search("[\x00-\x1f\x7f]", value):
            return "string with control characters"
        if BIDI_OR_INVISIBLE.search(value):
            return "string with bidi/zero-width characters"
        try:
            float(value)
            return "numeric string"
        except ValueError:
            return "string"
    return type(value).__name__


class Violations:
    def __init__(self):
        self.groups = collections.OrderedDict()
        self.calls = 0

    def add(self, where, value, detail):
        key = "%s [%s]" % (where, category(value))
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        self.groups.setdefault(key, []).append("%s -> %s" % (shown, detail[:300]))

    def check(self):
        if self.groups:
            lines = ["%d kinds of violation over %d calls:" % (len(self.groups), self.calls)]
            for key, items in self.groups.items():
                lines.append("  %s: %d, e.g. %s" % (key, len(items), items[0]))
            pytest.fail("\n".join(lines), pytrace=False)


def error_problem(error, broker):
    """Why an error answer is not a readable validation error, or None if it is."""
    if isinstance(error, harness.HttpFailure):
        return "not an RPC answer: %s" % error
    message = error.message if isinstance(error.message, str) else repr(error.message)
    if error.transport == "XML-RPC" and error.kind != 2:
        last = [line for line in message.splitlines() if line.strip()][-1:] or [""]
        return "XML-RPC fault code %r (not a UserError/ValidationError), a traceback ending %r" % (
            error.kind, last[0][:200])
    if error.transport == "JSON-RPC" and error.kind not in (
            "odoo.exceptions.ValidationError", "odoo.exceptions.UserError"):
        return "JSON-RPC error %s: %s" % (error.kind, message[-200:])
    try:
        harness.readable(message, broker)
    except AssertionError:
        return "unreadable message: %r" % message[-200:]
    if BIDI_OR_INVISIBLE.search(message):
        return "raw bidi/zero-width character in the message: %r" % message
    return None


# ---------------------------------------------------------------------------------------------
def xml_safe(value):
    """What XML-RPC can carry: no XML-invalid characters, ints within int32 (else floats)."""
    if isinstance(value, str):
        return XML_INVALID.sub("", value)
    if isinstance(value, int) and not isinstance(value, bool) and not (
            INT32[0] <= value <= INT32[1]):
        return _float(value)
    if isinstance(value, list):
        return [xml_safe(v) for v in value]
    if isinstance(value, dict):
        return {xml_safe(k): xml_safe(v) for k, v in value.items()}
    return value


def operands(json_capable):
    scalars = st.one_of(
        st.sampled_from(CURATED + (JSON_ONLY if json_capable else [])),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-1e-300, max_value=1e-300),
        st.integers(min_value=-(2**63), max_value=2**63),
        st.sampled_from([INT32[0], INT32[1], INT32[0] - 1, INT32[1] + 1]),
        st.text(max_size=12),
        st.text(alphabet=st.characters(whitelist_categories=("Cc", "Cf", "Zs", "Nd")),
                max_size=6),
        st.none(),
        st.booleans(),
    )
    values = st.one_of(scalars, st.lists(scalars, max_size=3),
                       st.dictionaries(st.text(max_size=4), scalars, max_size=2))
    if not json_capable:
        values = values.map(xml_safe)
    return values


HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------------------------
def exercise_odoo(client, anchor_id, a, b, found, broker, write=True):
    """One pair through compute_sum, create (+ action_suma on what was stored) and write."""
    check_compute_sum(client, a, b, found, broker)
    check_create(client, a, b, found, broker)
    if write:
        check_write(client, anchor_id, a, found, broker)


def culprit(a, b):
    return a if not is_number(a) else b


def check_compute_sum(client, a, b, found, broker):
    where = client.transport + " compute_sum"
    expected = exact_sum(a, b)
    found.calls += 1
    try:
        result = client.call(harness.OPERATION, "compute_sum", a, b)
    except (harness.RpcError, harness.HttpFailure) as error:
        if expected is not None:
            found.add(where + " refused a valid pair", a, "%r + %r: %s" % (a, b, error))
        else:
            problem = error_problem(error, broker)
            if problem:
                found.add(where, culprit(a, b), problem)
        return
    if expected is None:
        found.add(where + " accepted", culprit(a, b), "%r + %r = %r" % (a, b, result))
    elif result != float(expected):
        found.add(where + " wrong sum", a, "%r + %r = %r" % (a, b, result))


def check_create(client, a, b, found, broker):
    """create, then the button on what was stored."""
    where = client.transport + " create"
    (rule_a, stored_a), (rule_b, stored_b) = orm_float(a), orm_float(b)
    bad = a if rule_a == "refuse" else b
    found.calls += 1
    try:
        [op] = client.call(harness.OPERATION, "create", [{"field_1": a, "field_2": b}])
    except (harness.RpcError, harness.HttpFailure) as error:
        if rule_a == rule_b == "must":
            found.add(where + " refused valid values", a, "%r, %r: %s" % (a, b, error))
        problem = error_problem(error, broker)
        if problem:
            found.add(where, bad, problem)
        return
    if "refuse" in (rule_a, rule_b):
        found.add(where + " accepted", bad, "stored %r" % read_back(client, op))
    else:
        check_click(client, op, stored_a, stored_b, found, broker, a)


def check_write(client, anchor_id, a, found, broker):
    where = client.transport + " write"
    rule, expected = orm_float(a)
    found.calls += 1
    try:
        client.call(harness.OPERATION, "write", [anchor_id], {"field_1": a})
    except (harness.RpcError, harness.HttpFailure) as error:
        if rule == "must":
            found.add(where + " refused a valid value", a, str(error))
        problem = error_problem(error, broker)
        if problem:
            found.add(where, a, problem)
        return
    stored = read_back(client, anchor_id)["field_1"]
    if rule == "refuse":
        found.add(where + " accepted", a, "stored %r" % stored)
    elif stored != expected:
        found.add(where + " stored", a, "%r instead of %r" % (stored, expected))


def read_back(client, op):
    return client.call(harness.OPERATION, "read", [op], fields=harness.OPERATION_FIELDS)[0]


def check_click(client, op, stored_a, stored_b, found, broker, value):
    where = client.transport + " action_suma"
    found.calls += 1
    try:
        action = client.call(harness.OPERATION, "action_suma", [op])
    except (harness.RpcError, harness.HttpFailure) as error:
        found.add(where + " raised", value, str(error))
        return
    row = read_back(client, op)
    kind, message = harness.notification(action)
    total = exact_sum(stored_a, stored_b)
    if total is not None:
        if (row["state"], row["result"], kind) != ("done", total, "success"):
            found.add(where + " wrong outcome", value, "%r + %r -> %r, %r" % (
                stored_a, stored_b, row, message))
    elif row["state"] != "failed" or kind != "danger":
        found.add(where + " accepted an unsummable pair", value, repr(row))
    else:
        for text in (message, row["error_message"]):
            try:
                harness.readable(text, broker)
            except AssertionError as error:
                found.add(where + " unreadable error", value, str(error))


def assert_still_works(client):
    assert client.call(harness.OPERATION, "compute_sum", 1, 2) == 3
    [op] = client.call(harness.OPERATION, "create", [{"field_1": 2, "field_2": 3}])
    assert harness.notification(client.call(harness.OPERATION, "action_suma", [op])) == (
        "success", "Operation completed 5")


@pytest.mark.parametrize("transport", ["xmlrpc", "jsonrpc"])
def test_hostile_operands_through_odoo(odoo, admin, broker, transport):
    client = getattr(odoo, transport)("cb_user", "cb_user")
    json_capable = transport == "jsonrpc"
    prepare = (lambda v: v) if json_capable else xml_safe
    [anchor] = client.call(harness.OPERATION, "create", [{"field_1": 1, "field_2": 1}])
    found = Violations()
    for value in CURATED + (JSON_ONLY if json_capable else []):
        exercise_odoo(client, anchor, prepare(value), 1, found, broker)

    @HYPOTHESIS
    @given(operands(json_capable), operands(json_capable))
    def generated(a, b):
        # write converts values exactly as create does: the curated list covers it
        exercise_odoo(client, anchor, a, b, found, broker, write=False)

    generated()
    assert_still_works(client)
    found.check()


def test_hostile_operands_straight_to_the_service(broker, one_service):
    """ClusterRpcProxy → compute.method: a remote InvalidOperand with a readable message for
    anything but two finite numbers, and the same instance still serving afterwards."""
    from nameko.exceptions import RemoteError
    from nameko.standalone.rpc import ClusterRpcProxy

    [instance] = one_service.running
    found = Violations()

    def exercise(rpc, a, b):
        expected = service_sum(a, b)
        found.calls += 1
        try:
            result = rpc.compute.method(a, b)
        except RemoteError as error:
            culprit = a if not is_number(a) else b
            if expected is not None:
                found.add("service refused a valid pair", a, "%r + %r: %s" % (a, b, error))
            elif error.exc_type != "InvalidOperand":
                found.add("service raised %s" % error.exc_type, culprit, str(error)[:200])
            elif BIDI_OR_INVISIBLE.search(error.value or "") or "Traceback" in error.value:
                found.add("service message", culprit, repr(error.value))
        else:
            if expected is None:
                found.add("service accepted", a if not is_number(a) else b,
                          "%r + %r = %r" % (a, b, result))
            elif result != expected or type(result) is not type(expected):
                found.add("service wrong sum", a, "%r + %r = %r" % (a, b, result))

    with ClusterRpcProxy({"AMQP_URI": broker.uri()}, timeout=10) as rpc:
        for value in CURATED + JSON_ONLY:
            exercise(rpc, value, 1)
            exercise(rpc, 1, value)

        @HYPOTHESIS
        @given(operands(True), operands(True))
        def generated(a, b):
            json.dumps([a, b])  # what kombu sends
            exercise(rpc, a, b)

        generated()
        assert rpc.compute.method(99999, 99999) == 199998
    assert instance.alive and instance.consuming(broker), "the service instance died"
    found.check()

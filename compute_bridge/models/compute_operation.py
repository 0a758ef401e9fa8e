"""An operation whose sum is computed by the Nameko ``compute`` service.

The model stays thin: it reads the configuration with :func:`..rpc.read_config`, calls
:mod:`..rpc.client`, and turns each outcome into a record state and a notification.
"""

import logging
import math
import uuid

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.tools import SQL

from ..rpc import BridgeError, CallOutcome, InvalidOperands

_logger = logging.getLogger(__name__)

COMPUTE_SERVICE = "compute"
COMPUTE_METHOD = "method"
MAX_SUMS_IN_NOTIFICATION = 10  # a notification listing 200 sums is unreadable
# Hostile operands (megabyte strings, bidi controls) are quoted this short in errors.
MAX_REPR_LENGTH = 60

DRAFT, QUEUED, SENT, DONE, FAILED = "draft", "queued", "sent", "done", "failed"
BACKGROUND_CALLBACK = "_on_background_sum"
OPERAND_FIELDS = ("field_1", "field_2")
# What a computation leaves on the record. Only the bridge writes these, through
# ComputeOperation._write_bridge_fields: a client that could write them could show a sum the
# service never computed, in the name of someone who never pressed Suma.
BRIDGE_FIELDS = frozenset({"result", "state", "error_message", "duration", "computed_by",
                           "computed_on", "service", "bridge_call_id"})
# ``name`` is computed from the operands: a written one would label the record with other numbers;
# ``attempts`` is the background call's (read-only there too): a write would change nothing.
CLIENT_READONLY_FIELDS = BRIDGE_FIELDS | {"name", "attempts"}
# The states in which nothing is under way, so an operand may change (making the result stale).
# A call under way (queued or sent in the background) computes the operands it was given:
# changing them then would store a result that belongs to other numbers, so the change is
# refused in every other state.
OPERAND_EDITABLE_STATES = frozenset({DRAFT, DONE, FAILED})
# A record whose operands changed is as if never computed.
STALE_VALUES = {
    "state": DRAFT, "result": False, "error_message": False, "duration": False,
    "computed_by": False, "computed_on": False, "service": False, "bridge_call_id": False,
}


def format_number(value):
    """A number with the precision it has, as the form and list show it (JavaScript's
    String(number)): the shortest text that reads back as the same float, without ".0".

    >>> format_number(199998.0), format_number(0.001 + 0.002), format_number(0.1 + 0.2)
    ('199998', '0.003', '0.30000000000000004')
    """
    text = repr(float(value))
    return text.removesuffix(".0")


def describe_value(value):
    """repr() of ``value`` cut short, and its type, as services/compute.py quotes operands.

    repr() escapes control, zero-width and bidi characters, so a message quoting a hostile
    value shows them instead of letting them hide or reorder the text around them.

    >>> describe_value("abc")
    "'abc' (str)"
    >>> describe_value(10**400)[-20:]
    '00000000000... (int)'
    """
    text = repr(value)
    if len(text) > MAX_REPR_LENGTH:
        text = text[:MAX_REPR_LENGTH] + "..."
    return "%s (%s)" % (text, type(value).__name__)


class ComputeOperation(models.Model):
    _name = "compute.operation"
    _description = "Compute Operation"
    _order = "id desc"

    name = fields.Char(compute="_compute_name", store=True)
    field_1 = fields.Float(string="First Value", required=True, default=0.0)
    field_2 = fields.Float(string="Second Value", required=True, default=0.0)
    result = fields.Float(readonly=True, copy=False)
    state = fields.Selection(
        [(DRAFT, "Draft"), (QUEUED, "Queued"), (SENT, "Sent"), (DONE, "Done"),
         (FAILED, "Failed")],
        default=DRAFT,
        required=True,
        readonly=True,
        copy=False,
    )
    error_message = fields.Text(
        readonly=True, copy=False, help="Why the last computation failed."
    )
    duration = fields.Float(
        string="Duration (ms)", readonly=True, copy=False, digits=(16, 1), aggregator="avg",
        help="Time from sending the request to receiving the reply.",
    )
    computed_by = fields.Many2one("res.users", readonly=True, copy=False)
    computed_on = fields.Datetime(readonly=True, copy=False)
    # Stored so that the charts can group by it (compute.operation.stats): the service asked.
    service = fields.Char(readonly=True, copy=False, help="The service that computed it.")
    # The background call computing this operation now, or that computed it last: a call
    # that is not this one (superseded, or its operands changed since) stores nothing here.
    bridge_call_id = fields.Many2one(
        "compute.bridge.call", string="Background Call", readonly=True, copy=False,
        ondelete="set null")
    attempts = fields.Integer(
        related="bridge_call_id.attempts", string="Attempts",
        help="Times the background call of this operation was sent.")

    @api.depends("field_1", "field_2")
    def _compute_name(self):
        for operation in self:
            operation.name = "%s + %s" % (
                format_number(operation.field_1),
                format_number(operation.field_2),
            )

    @api.model
    def default_get(self, fields_list):
        """A new operation is a draft, whatever the defaults say: a ``default_state`` or
        ``default_result`` in the context (which any RPC caller can pass) or a user default
        (ir.default) would otherwise create it already computed. Those defaults are ignored
        rather than refused, since the web client adds ``default_<field>`` itself when a
        record is created in a list grouped by that field."""
        defaults = super().default_get(fields_list)
        for name in BRIDGE_FIELDS.intersection(defaults):
            field = self._fields[name]
            if field.default:
                defaults[name] = field.default(self)
            else:
                del defaults[name]
        return defaults

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._check_client_vals(vals)
            self._check_finite_operands(vals)
        return super().create(vals_list)

    def write(self, vals):
        """Write what a client may write: the operands.

        An operand that changes value makes the result stale: the record goes back to draft
        with its result and the trace of the last computation cleared. Writing the value it
        already has changes nothing. In a state where a call is under way (any state other
        than draft, done and failed: the background states, queued and sent, once they exist),
        a changed operand is refused, so that the call's result is never stored against other
        numbers.
        """
        self._check_client_vals(vals)
        stale = self._made_stale_by(self._check_finite_operands(vals))
        result = super().write(vals)
        stale._write_bridge_fields(STALE_VALUES)
        return result

    def _write_bridge_fields(self, vals):
        """Write what a computation leaves on the records: the bridge's only way to do so.

        It skips the guard of :meth:`write` by calling the ORM's own write. A client cannot
        reach it: Odoo refuses remote calls of a method whose name starts with an underscore,
        and nothing a client sends (context keys included) changes what :meth:`write` allows.
        """
        unexpected = set(vals) - BRIDGE_FIELDS
        if unexpected:  # a programming error, not a user's
            raise ValueError("not fields the bridge writes: %s" % ", ".join(sorted(unexpected)))
        # The ORM's write, past this class's write and its guard: that is the point.
        return super().write(vals)  # pylint: disable=super-method-mismatch

    @api.model
    def _check_client_vals(self, vals):
        """Refuse a client's values for the fields only the bridge writes, administrators'
        included: the web client never sends them (they are read-only there), copy() leaves
        them out (copy=False), so only a forged request or an import of them ends here."""
        refused = CLIENT_READONLY_FIELDS.intersection(vals)
        if refused:
            raise UserError(self.env._(
                "%(fields)s: set by the Compute Bridge when it computes the operation, never "
                "written by hand. Change First Value or Second Value and press Suma to compute "
                "a new result.",
                fields=", ".join(self._field_label(name) for name in sorted(refused))))

    def _made_stale_by(self, operands):
        """The records of ``self`` that ``operands`` (field name: new value) would change and
        that have something computed to clear; refuse if one of them has a call under way."""
        if not operands:
            return self.browse()
        changed = self.filtered(lambda operation: any(
            operation[name] != value for name, value in operands.items()))
        busy = changed.filtered(lambda operation: operation.state not in OPERAND_EDITABLE_STATES)
        if busy:
            raise UserError(self.env._(
                "%(operation)s has a call under way: its operands cannot change until it ends.",
                operation=busy[0].name))
        return changed.filtered(lambda operation: operation.state != DRAFT)

    def action_suma(self):
        """Compute the sum of every operation in ``self`` with the compute service, now.

        Failures are written on the records (``state = failed``) and reported in a danger
        notification instead of being raised: raising would roll back the failed state, and
        the user would see nothing but an error dialog. Pressing again retries. An operation
        with a background call under way is refused: its call will store the result.
        """
        operations = self._lock_existing()
        if not operations:
            return self._notification(self.env._("Nothing to compute."), "warning")
        operations._check_no_call_under_way()
        try:
            outcomes = self.env["compute.bridge"].sudo()._call_many(
                COMPUTE_SERVICE,
                COMPUTE_METHOD,
                [(operation.field_1, operation.field_2) for operation in operations],
            )
        except BridgeError as error:  # the whole batch failed: broker or service unavailable
            outcomes = [CallOutcome(None, error, 0.0)] * len(operations)
        for operation, outcome in zip(operations, outcomes, strict=True):
            operation._write_outcome(outcome)
        failures = [outcome.error for outcome in outcomes if outcome.error is not None]
        if failures:
            _logger.info("Suma of %d operations: %d failed, the first with: %s",
                         len(operations), len(failures), failures[0])
        else:
            _logger.info("Suma of %d operations: all done", len(operations))
        return self._outcomes_notification(outcomes)

    def action_suma_queue(self):
        """Queue the sum of every operation in ``self`` as a background call and return at
        once: each becomes ``queued``, then ``sent``, then ``done`` or ``failed`` as the runner
        cron (after this transaction commits) sends it and stores its result. Operations
        already queued or sent are left to their call."""
        operations = self._lock_existing().filtered(
            lambda operation: operation.state in OPERAND_EDITABLE_STATES)
        if not operations:
            return self._notification(self.env._("Nothing to queue."), "warning")
        bridge = self.env["compute.bridge"].sudo()
        batch = uuid.uuid4().hex
        vals_list = []
        for operation in operations:
            vals = bridge._call_vals(COMPUTE_SERVICE, COMPUTE_METHOD,
                                     (operation.field_1, operation.field_2), None,
                                     operation, BACKGROUND_CALLBACK)
            vals_list.append(dict(vals, batch=batch))
        calls = bridge._queue(vals_list)
        for operation, call in zip(operations, calls, strict=True):
            operation._write_bridge_fields({
                "state": QUEUED, "bridge_call_id": call.id, "error_message": False})
        _logger.info("Suma of %d operations queued (batch %s)", len(operations), batch)
        return self._notification(
            self.env._("%(count)s operations queued: their results appear here as they "
                       "arrive.", count=len(operations)), "info")

    def _on_background_sum(self, call):
        """The background call's callback: show its state, store its result or error. A call
        that is no longer this operation's (operands changed, another Suma since) changes
        nothing."""
        self.ensure_one()
        if self.bridge_call_id != call:
            return
        if call.state in (QUEUED, SENT):
            self._write_bridge_fields({"state": call.state})
        elif call.state == DONE:
            self._write_bridge_fields({
                "state": DONE, "result": call.result, "error_message": False,
                "duration": call.duration, "computed_by": call.user_id.id,
                "computed_on": call.done_at, "service": call.service})
        elif call.state == FAILED:
            self._write_bridge_fields({
                "state": FAILED, "error_message": call.error_message,
                "duration": call.duration, "computed_by": call.user_id.id,
                "computed_on": call.done_at, "service": call.service})
        else:  # cancelled: as if never computed
            self._write_bridge_fields(STALE_VALUES)

    def _check_no_call_under_way(self):
        busy = self.filtered(lambda operation: operation.state not in OPERAND_EDITABLE_STATES)
        if busy:
            raise UserError(self.env._(
                "%(operation)s has a call under way: its result will be stored when it ends.",
                operation=busy[0].name))

    def _lock_existing(self):
        """The records of ``self`` that still exist, locked against writes and deletes by
        others until this transaction ends, so that the results can be written.

        Another user may delete some of them before or while the service computes the batch:
        those are skipped, the others computed. A delete committed after this transaction
        began makes the lock fail with a serialization error; Odoo then retries the request,
        which no longer sees the deleted records. A delete that comes later waits for the lock.
        """
        if not self.ids:
            return self
        # log_exceptions=False: the serialization failure is Odoo's to retry, not an error
        self.env.cr.execute(
            SQL("SELECT id FROM %s WHERE id IN %s FOR NO KEY UPDATE",
                SQL.identifier(self._table), tuple(self.ids)),
            log_exceptions=False,
        )
        existing = {row[0] for row in self.env.cr.fetchall()}
        return self.browse([record_id for record_id in self.ids if record_id in existing])

    @api.model
    def compute_sum(self, a, b):
        """Return ``a + b`` as computed by the compute service; nothing is stored.

        Refused operands (non-numbers, NaN, infinities, overflow) raise a ``ValidationError``;
        an unreachable broker or service a ``UserError``. Computing is for those who may create
        operations: the check is explicit because a model method has no record to guard it.
        """
        self.check_access("create")
        # Checked here too: a refusal then names the operand and costs no round trip. The
        # operands travel unchanged, so that the service adds ints exactly.
        self._check_operand("field_1", a)
        self._check_operand("field_2", b)
        bridge = self.env["compute.bridge"].sudo()
        try:
            total = bridge.call(COMPUTE_SERVICE, COMPUTE_METHOD, a, b)
        except InvalidOperands as error:
            raise ValidationError(bridge._bridge_error_message(error)) from error
        except BridgeError as error:
            raise UserError(bridge._bridge_error_message(error)) from error
        try:
            return float(total)
        except OverflowError as error:  # an exact int sum beyond the float range
            raise ValidationError(self.env._(
                "%(a)s + %(b)s is too large for a floating-point number.",
                a=describe_value(a), b=describe_value(b))) from error

    @api.model
    def _check_finite_operands(self, vals):
        """Refuse, before the ORM converts them, operands it would store as NaN or infinity or
        fail on with a traceback (strings, lists, ints beyond the float range), and "no value",
        which the ORM would store as 0. Return the operands in ``vals`` as floats, by name."""
        return {field_name: self._check_operand(field_name, vals[field_name])
                for field_name in OPERAND_FIELDS if field_name in vals}

    @api.model
    def _check_operand(self, field_name, value):
        """Return ``value`` as a float, or raise a ValidationError naming the field and quoting
        the value, unless it is a finite int or float (bool is not a number here)."""
        if value is None or value is False:
            # What the web client sends for a number it read as Infinity ("1e400", 400 digits).
            raise ValidationError(self.env._(
                "%(field)s must be a finite number: the value entered is too large or not a "
                "number.", field=self._field_label(field_name)))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range, e.g. JSON's 10**400
                number = math.inf
            if math.isfinite(number):
                return number
        raise ValidationError(self.env._(
            "%(field)s must be a finite number, not %(value)s.",
            field=self._field_label(field_name), value=describe_value(value)))

    @api.model
    def _field_label(self, field_name):
        """The field's label in the user's language, as the form shows it."""
        return self._fields[field_name]._description_string(self.env)

    def _write_outcome(self, outcome):
        self.ensure_one()
        vals = {
            "duration": outcome.duration_ms,
            "computed_by": self.env.uid,
            "computed_on": fields.Datetime.now(),
            "service": COMPUTE_SERVICE,
        }
        if outcome.error is None:
            vals.update(result=outcome.value, state=DONE, error_message=False,
                        bridge_call_id=False)
        else:
            _logger.debug("compute.operation(%s): computation failed: %s", self.id, outcome.error)
            message = self.env["compute.bridge"]._bridge_error_message(outcome.error)
            vals.update(state=FAILED, bridge_call_id=False, error_message=message)
        self._write_bridge_fields(vals)

    @api.model
    def _outcomes_notification(self, outcomes):
        failures = [outcome for outcome in outcomes if outcome.error is not None]
        sums = [format_number(outcome.value) for outcome in outcomes if outcome.error is None]
        if not failures:
            shown = ", ".join(sums[:MAX_SUMS_IN_NOTIFICATION])
            if len(sums) > MAX_SUMS_IN_NOTIFICATION:
                shown += ", …"
            if len(sums) == 1:
                return self._notification(self.env._("Operation completed %s", shown), "success")
            return self._notification(
                self.env._("%(count)s operations completed %(sums)s", count=len(sums), sums=shown),
                "success",
            )
        first_error = self.env["compute.bridge"]._bridge_error_message(failures[0].error)
        if len(outcomes) == 1:
            return self._notification(self.env._("Operation failed: %s", first_error), "danger")
        return self._notification(
            self.env._("%(failed)s of %(count)s operations failed: %(error)s",
              failed=len(failures), count=len(outcomes), error=first_error),
            "danger" if len(failures) == len(outcomes) else "warning",
        )

    @api.model
    def _notification(self, message, kind):
        # `next` reloads the view so the form and list show the new state at once.
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Compute Bridge"),
                "message": message,
                "type": kind,
                "sticky": kind != "success",
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

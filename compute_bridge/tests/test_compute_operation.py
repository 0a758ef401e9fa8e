"""compute.operation against the real broker and the real compute service."""

import doctest
import math
import os
import threading
import time
import xmlrpc.client
from unittest.mock import patch

from odoo import SUPERUSER_ID, api
from odoo.exceptions import UserError, ValidationError
from odoo.service.model import retrying
from odoo.tests import TransactionCase, tagged
from odoo.tools import mute_logger
from odoo.tools.translate import code_translations

from ..models import compute_bridge, compute_operation
from ..rpc import BROKER_URL_ENV_VAR
from .common import (
    BROKER_URL,
    CLOSED_PORT_URL,
    SECRET,
    TEST_RPC_TIMEOUT,
    ComputeBridgeCase,
    let_other_threads_open_the_registry,
)

SPANISH = "es_ES"
SYNC_TIMEOUT = 60  # seconds a test waits for another transaction to reach a point


class TestComputeOperation(ComputeBridgeCase):
    def assertNotification(self, action, kind, text):
        """``action`` is a display_notification of ``kind`` whose message contains ``text``,
        made of plain XML-RPC types, that reloads the view after showing."""
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], kind)
        self.assertIn(text, action["params"]["message"])
        self.assertEqual(action["params"]["next"]["tag"], "soft_reload")
        xmlrpc.client.dumps((action,), allow_none=False)

    def test_suma_with_the_real_service(self):
        operation = self.new_operation(99999, 99999)
        action = operation.with_user(self.user).action_suma()
        self.assertNotification(action, "success", "Operation completed 199998")
        self.assertRecordValues(operation, [{
            "result": 199998.0, "state": "done", "error_message": False,
            "computed_by": self.user.id, "name": "99999 + 99999",
        }])
        self.assertTrue(operation.computed_on)
        self.assertGreater(operation.duration, 0)

    def test_suma_many_records_at_once(self):
        operations = self.Operation.browse()
        for value in range(1, 6):
            operations |= self.new_operation(value, value * 10)
        action = operations.action_suma()
        self.assertNotification(action, "success", "5 operations completed")
        self.assertEqual(operations.mapped("state"), ["done"] * 5)
        self.assertEqual(
            sorted(operations.mapped("result")), [11.0, 22.0, 33.0, 44.0, 55.0])

    def test_server_action_compute_sums(self):
        operations = self.new_operation(1, 2) | self.new_operation(3, 4)
        server_action = self.env.ref("compute_bridge.compute_operation_action_compute_sums")
        self.assertEqual(server_action.binding_model_id.model, "compute.operation")
        action = server_action.with_user(self.user).with_context(
            active_model="compute.operation", active_ids=operations.ids,
        ).run()
        self.assertNotification(action, "success", "2 operations completed")
        self.assertEqual(operations.mapped("result"), [3.0, 7.0])

    def test_non_finite_operands_refused(self):
        for value in (math.nan, math.inf, -math.inf):
            with self.subTest(value=value), self.assertRaises(ValidationError):
                self.new_operation(value, 1)
        operation = self.new_operation(1, 1)
        with self.assertRaises(ValidationError):
            operation.write({"field_2": math.nan})

    def test_anything_but_a_number_is_refused_readably(self):
        """What an RPC caller may send instead of a number: a ValidationError that names the
        field and quotes the value, short and with its control and bidi characters escaped,
        never the ORM's ValueError/TypeError/OverflowError."""
        hostile = ["abc", "", "1.5", "nan", "inf", "1e400", "\u202e123", "1\u200b", "\x00",
                   "x" * 10_000, [], [1], {}, {"a": 1}, True, 10**400, -(10**400)]
        operation = self.new_operation(1, 1)
        for value in hostile:
            with self.subTest(value=value):
                with self.assertRaises(ValidationError) as caught:
                    self.new_operation(value, 1)
                message = str(caught.exception)
                self.assertTrue(message.startswith("First Value must be a finite number, not "),
                                message)
                self.assertLess(len(message), 150)
                self.assertNotRegex(message, "[\x00-\x1f\u200b-\u200f\u202a-\u202e]")
                with self.assertRaisesRegex(ValidationError, "^Second Value must be"):
                    operation.write({"field_2": value})
                with self.assertRaisesRegex(ValidationError, "^First Value must be"):
                    self.Operation.with_user(self.user).compute_sum(value, 1)
        self.assertRecordValues(operation, [{"field_1": 1.0, "field_2": 1.0}])

    def test_no_value_is_refused(self):
        """None and False, which the ORM would store as 0, are refused by create, write and
        compute_sum: the web client sends null for a number it read as Infinity ("1e400")."""
        for value in (None, False):
            with self.subTest(value=value):
                with self.assertRaisesRegex(ValidationError, "^First Value must be a finite "
                                            "number: the value entered is too large"):
                    self.new_operation(value, 1)
                with self.assertRaisesRegex(ValidationError, "^Second Value must be"):
                    self.new_operation(1, 1).write({"field_2": value})
                with self.assertRaisesRegex(ValidationError, "^Second Value must be"):
                    self.Operation.compute_sum(1, value)
        operation = self.Operation.with_user(self.user).create({"field_2": 2})
        self.assertRecordValues(operation, [{"field_1": 0.0, "field_2": 2.0}])
        operation.write({"field_1": 2**53 + 1, "field_2": 10**300})
        self.assertRecordValues(operation, [{"field_1": 2.0**53, "field_2": 1e300}])

    def test_compute_sum_of_huge_ints(self):
        """Ints travel unchanged and the service adds them exactly; a sum beyond the float
        range is a ValidationError, not an OverflowError."""
        self.assertEqual(self.Operation.compute_sum(2**53 + 1, 1), float(2**53 + 2))
        big = 10**308
        self.assertEqual(self.Operation.compute_sum(big, 0), 1e308)
        with self.assertRaisesRegex(ValidationError, "too large for a floating-point number"):
            self.Operation.compute_sum(big, big)

    def test_doctests(self):
        result = doctest.testmod(compute_operation)
        self.assertGreater(result.attempted, 0, "no doctest example ran")
        self.assertEqual(result.failed, 0, "compute_operation.py doctests failed (see the log)")

    def test_broker_unreachable_keeps_input_and_fails_fast(self):
        self.set_broker(self.env, CLOSED_PORT_URL)
        operation = self.new_operation(2, 3)
        started = time.monotonic()
        action = operation.action_suma()
        self.assertLess(time.monotonic() - started, TEST_RPC_TIMEOUT + 1)
        self.assertNotification(action, "danger", "Cannot reach the message broker")
        self.assertRecordValues(operation, [{"field_1": 2, "field_2": 3, "state": "failed"}])
        self.assertIn("guest:***@127.0.0.1:1", operation.error_message)
        self.assertNotIn(SECRET, operation.error_message)
        self.assertNotIn(SECRET, action["params"]["message"])

    def test_retry_succeeds_after_failure(self):
        self.set_broker(self.env, CLOSED_PORT_URL)
        operation = self.new_operation(20, 22)
        operation.action_suma()
        self.assertEqual(operation.state, "failed")
        self.set_broker(self.env, BROKER_URL)
        operation.action_suma()
        self.assertRecordValues(operation, [
            {"state": "done", "result": 42.0, "error_message": False}])

    def test_remote_invalid_operand_on_a_record(self):
        # Both finite, but their sum overflows: the service refuses with InvalidOperand.
        operation = self.new_operation(1e308, 1e308)
        action = operation.action_suma()
        self.assertNotification(action, "danger", "refused the operands")
        self.assertEqual(operation.state, "failed")

    def test_one_bad_record_does_not_fail_the_others(self):
        good, bad = self.new_operation(1, 1), self.new_operation(1e308, 1e308)
        action = (good | bad).action_suma()
        self.assertNotification(action, "warning", "1 of 2 operations failed")
        self.assertEqual((good.state, bad.state), ("done", "failed"))

    def test_compute_sum(self):
        self.assertEqual(self.Operation.with_user(self.user).compute_sum(1.5, 2), 3.5)
        self.assertEqual(self.Operation.compute_sum(99999, 99999), 199998.0)

    def test_compute_sum_invalid_operand(self):
        with self.assertRaisesRegex(ValidationError, r"^First Value .* not 'abc' \(str\)\.$"):
            self.Operation.compute_sum("abc", 1)
        # finite operands whose float sum overflows: the service refuses them
        with self.assertRaisesRegex(ValidationError, "refused the operands"):
            self.Operation.compute_sum(1e308, 1e308)

    def test_compute_sum_broker_unreachable(self):
        self.set_broker(self.env, CLOSED_PORT_URL)
        with self.assertRaises(UserError) as caught:
            self.Operation.compute_sum(1, 2)
        self.assertNotIsInstance(caught.exception, ValidationError)
        self.assertNotIn(SECRET, str(caught.exception))

    def test_environment_overrides_the_parameter(self):
        with patch.dict(os.environ, {BROKER_URL_ENV_VAR: CLOSED_PORT_URL}):
            operation = self.new_operation(1, 2)
            operation.action_suma()
            self.assertEqual(operation.state, "failed")
            self.assertIn("127.0.0.1:1", operation.error_message)
        operation.action_suma()
        self.assertEqual(operation.state, "done")

    def test_action_suma_on_nothing(self):
        action = self.Operation.action_suma()
        self.assertEqual(action["params"]["type"], "warning")


@tagged("post_install", "-at_install")
class TestMessagesInTheUsersLanguage(ComputeBridgeCase):
    """What a Spanish user reads is Spanish, field names and broker errors included."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["res.lang"]._activate_lang(SPANISH)
        cls.env["ir.module.module"]._load_module_terms(["compute_bridge"], [SPANISH],
                                                       overwrite=True)
        cls.Spanish = cls.Operation.with_user(cls.user).with_context(lang=SPANISH)

    def test_a_refused_operand_names_the_field_in_spanish(self):
        with self.assertRaisesRegex(ValidationError, "^Primer valor "):
            self.Spanish.create({"field_1": "abc", "field_2": 1})
        with self.assertRaisesRegex(ValidationError, "^Segundo valor "):
            self.Spanish.compute_sum(1, "abc")

    def test_a_forged_result_is_refused_in_spanish(self):
        operation = self.Spanish.browse(self.new_operation(1, 1).ids)
        with self.assertRaisesRegex(UserError, "^Resultado, Estado: los establece Compute "
                                    "Bridge al calcular la operación"):
            operation.write({"result": 5.0, "state": "done"})

    def test_a_broker_error_is_told_through_the_translations(self):
        """Built from the error's params with a translatable template: with a Spanish term for
        it (the one es.po will hold), the user reads Spanish with the masked broker filled in."""
        source = "Cannot reach the message broker at %(broker)s (%(detail)s)."
        spanish = "No se puede contactar con el broker de mensajes en %(broker)s (%(detail)s)."
        terms = dict(code_translations.get_python_translations("compute_bridge", SPANISH))
        terms[source] = spanish
        self.set_broker(self.env, CLOSED_PORT_URL)
        operation = self.new_operation(1, 2)
        with patch.dict(code_translations.python_translations,
                        {("compute_bridge", SPANISH): terms}):
            action = self.Spanish.browse(operation.ids).action_suma()
        self.assertTrue(operation.error_message.startswith(
            "No se puede contactar con el broker de mensajes en pyamqp://guest:***@127.0.0.1:1 ("),
            operation.error_message)
        self.assertTrue(action["params"]["message"].startswith("Operación fallida: No se puede"),
                        action["params"]["message"])
        self.assertNotIn(SECRET, operation.error_message)


@tagged("post_install", "-at_install")
class TestSumaWhileRecordsAreDeleted(TransactionCase):
    """A Suma and a manager's delete in two transactions of their own, committed, each run
    through odoo.service.model.retrying as Odoo runs a request (a serialization failure is
    retried from the start). Post-install: other transactions see the module's tables."""

    COUNT = 50
    DELETED = 10

    def setUp(self):
        super().setUp()
        let_other_threads_open_the_registry(self)
        # other transactions do not see this test's parameters: the environment points them
        # at the test broker
        environ = patch.dict(os.environ, {BROKER_URL_ENV_VAR: BROKER_URL})
        environ.start()
        self.addCleanup(environ.stop)
        self.ids = self.in_transaction(lambda env: env["compute.operation"].create(
            [{"field_1": number, "field_2": 1} for number in range(self.COUNT)]).ids)
        self.addCleanup(self.in_transaction,
                        lambda env: env["compute.operation"].browse(self.ids).exists().unlink())
        self.gone = self.ids[:self.DELETED]

    def in_transaction(self, func):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            return retrying(lambda: func(env), env)

    def suma(self):
        return self.in_transaction(
            lambda env: env["compute.operation"].browse(self.ids).action_suma())

    def delete(self, backend_pids=None):
        def unlink(env):
            if backend_pids is not None:
                env.cr.execute("SELECT pg_backend_pid()")
                backend_pids.append(env.cr.fetchone()[0])
            env["compute.operation"].browse(self.gone).exists().unlink()
        # a delete that waited for the Suma's lock fails to serialize once and is retried,
        # as a manager's request would be: Odoo logs that query as an error
        with mute_logger("odoo.sql_db"):
            self.in_transaction(unlink)

    def assert_the_others_are_done(self, action, computed):
        self.assertEqual(action["params"]["type"], "success", action["params"]["message"])
        self.assertIn("%d operations completed" % computed, action["params"]["message"])

        def states(env):
            operations = env["compute.operation"].browse(self.ids).exists()
            return sorted(operations.ids), set(operations.mapped("state"))
        ids, found = self.in_transaction(states)
        self.assertEqual(ids, sorted(self.ids[self.DELETED:]))
        self.assertEqual(found, {"done"})

    def test_records_deleted_before_the_suma_are_skipped(self):
        """The list the user pressed Suma on still shows records another user deleted."""
        self.delete()
        self.assert_the_others_are_done(self.suma(), computed=self.COUNT - self.DELETED)

    def test_records_deleted_during_the_suma_are_skipped(self):
        """The delete comes while the service computes the batch: it waits for the results to
        be written (all were computed), then deletes."""
        deleter_pids, deleter = [], None

        def call_many_meanwhile_delete(*args, **kwargs):
            nonlocal deleter
            if deleter is None:
                deleter = threading.Thread(target=self.delete, args=(deleter_pids,))
                deleter.start()
                self.wait_until_done_or_waiting(deleter, deleter_pids)
            return real_call_many(*args, **kwargs)

        real_call_many = compute_bridge.rpc.call_many
        with patch.object(compute_bridge.rpc, "call_many", call_many_meanwhile_delete):
            action = self.suma()
        deleter.join(SYNC_TIMEOUT)
        self.assertFalse(deleter.is_alive())
        self.assert_the_others_are_done(action, computed=self.COUNT)

    def wait_until_done_or_waiting(self, thread, backend_pids):
        """Until ``thread`` has finished, or its database session waits for a lock."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        while thread.is_alive() and time.monotonic() < deadline:
            with self.registry.cursor() as cr:
                cr.execute("SELECT 1 FROM pg_stat_activity"
                           " WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
                           [backend_pids or [0]])
                if cr.fetchone():
                    return
            time.sleep(0.05)

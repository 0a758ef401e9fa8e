"""What a compute.operation shows is what the service computed for the operands it shows.

An operand that changes makes the result stale; the result, state, error, duration and who
computed it when are written by the bridge only, whoever asks and however (ORM, XML-RPC,
JSON-RPC, forged context keys, defaults, imports).
"""

import json
import xmlrpc.client

from odoo.exceptions import UserError
from odoo.tests import Form, HttpCase, new_test_user, tagged
from odoo.tools import SQL

from .common import BROKER_URL, CLOSED_PORT_URL, MANAGER_GROUP, USER_GROUP, ComputeBridgeCase

FORGED_RESULT = 123456.0
FORGED = {"result": FORGED_RESULT, "state": "done"}
# Context keys a forger may hope the bridge trusts, and the defaults that would create an
# operation already computed.
FORGED_CONTEXT = {
    "compute_bridge_internal": True, "bridge_write": True, "write_bridge_fields": True,
    "default_state": "done", "default_result": FORGED_RESULT,
}
REFUSED_MESSAGE = "set by the Compute Bridge when it computes the operation"
PASSWORD = "cb-integrity-password"
ADMIN_GROUPS = "base.group_user,base.group_system"
NOT_COMPUTED = {
    "state": "draft", "result": 0.0, "error_message": False, "duration": 0.0,
    "computed_by": False, "computed_on": False,
}


class TestOperandEdits(ComputeBridgeCase):
    def computed(self, value_1, value_2):
        operation = self.new_operation(value_1, value_2)
        operation.with_user(self.user).action_suma()
        self.assertEqual(operation.state, "done")
        return operation.with_user(self.user)

    def test_a_changed_operand_makes_the_result_stale(self):
        operation = self.computed(1, 1)
        operation.write({"field_1": 500})
        self.assertRecordValues(operation, [dict(NOT_COMPUTED, name="500 + 1", field_1=500.0)])
        operation.action_suma()
        self.assertRecordValues(operation, [{"state": "done", "result": 501.0}])

    def test_writing_the_same_value_keeps_the_result(self):
        operation = self.computed(1, 1)
        computed_on = operation.computed_on
        operation.write({"field_1": 1, "field_2": 1.0})
        self.assertRecordValues(operation, [{
            "state": "done", "result": 2.0, "computed_by": self.user.id,
            "computed_on": computed_on}])

    def test_only_the_edited_records_go_back_to_draft(self):
        same, edited = self.computed(2, 2), self.computed(1, 2)
        (same | edited).write({"field_1": 2})
        self.assertEqual((same.state, edited.state), ("done", "draft"))
        self.assertEqual((same.result, edited.result), (4.0, 0.0))

    def test_a_failed_operation_edited_goes_back_to_draft(self):
        self.set_broker(self.env, CLOSED_PORT_URL)
        operation = self.new_operation(2, 3)
        operation.action_suma()
        self.assertEqual(operation.state, "failed")
        operation.write({"field_2": 5})
        self.assertRecordValues(operation, [dict(NOT_COMPUTED, name="2 + 5")])

    def test_the_form_edits_a_done_operation(self):
        """The web client saves the changed operand only (the other fields are read-only)."""
        operation = self.computed(1, 1)
        with Form(operation) as form:
            form.field_1 = 500
        self.assertRecordValues(operation, [dict(NOT_COMPUTED, name="500 + 1")])

    def test_a_call_under_way_refuses_operand_changes(self):
        """Any state but draft, done and failed is a call under way (the background states):
        no such state exists yet, so the row is given one in SQL, as the ORM would refuse it."""
        operation = self.computed(1, 1)
        operation.flush_recordset()
        self.env.cr.execute(SQL("UPDATE compute_operation SET state = 'queued' WHERE id = %s",
                                operation.id))
        operation.invalidate_recordset()
        with self.assertRaisesRegex(UserError, "^1 \\+ 1 has a call under way"):
            operation.write({"field_1": 500})
        operation.write({"field_1": 1})  # the same value changes nothing
        self.assertRecordValues(operation, [{"field_1": 1.0, "result": 2.0}])


class TestBridgeFieldsAreTheBridges(ComputeBridgeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = new_test_user(cls.env, "cb_admin", groups=ADMIN_GROUPS)

    def clients(self):
        return {"user": self.user, "manager": self.manager, "admin": self.admin}

    def test_a_client_cannot_forge_a_result(self):
        operation = self.new_operation(1, 1)
        for role, user in self.clients().items():
            for context in ({}, FORGED_CONTEXT):
                for vals in (FORGED, {"computed_by": self.admin.id}, {"error_message": "x"},
                             {"duration": 1.0}, {"computed_on": "2026-01-01 00:00:00"},
                             {"state": "draft"}, {"name": "1 + 1"}, {"attempts": 99},
                             dict(FORGED, field_1=2)):
                    with self.subTest(role=role, context=context, vals=vals), \
                            self.assertRaisesRegex(UserError, REFUSED_MESSAGE):
                        operation.with_user(user).with_context(**context).write(vals)
        self.assertRecordValues(operation, [dict(NOT_COMPUTED, field_1=1.0)])

    def test_a_client_cannot_create_a_computed_operation(self):
        Operation = self.Operation.with_context(**FORGED_CONTEXT)
        for role, user in self.clients().items():
            with self.subTest(role=role), self.assertRaisesRegex(UserError, REFUSED_MESSAGE):
                Operation.with_user(user).create(dict(FORGED, field_1=1, field_2=1))

    def test_forged_defaults_create_a_draft(self):
        """Defaults from the context or the user's own ir.default cannot compute a record."""
        self.env["ir.default"].with_user(self.user).set(
            "compute.operation", "result", FORGED_RESULT, user_id=True)
        operation = self.Operation.with_user(self.user).with_context(**FORGED_CONTEXT).create(
            {"field_1": 1, "field_2": 1})
        self.assertRecordValues(operation, [NOT_COMPUTED])

    def test_suma_still_writes_the_results(self):
        operation = self.new_operation(20, 22)
        operation.with_user(self.user).action_suma()
        self.assertRecordValues(operation, [{
            "state": "done", "result": 42.0, "computed_by": self.user.id}])

    def test_copy_is_a_draft_with_the_same_operands(self):
        operation = self.new_operation(20, 22)
        operation.action_suma()
        copy = operation.with_user(self.user).copy()
        self.assertRecordValues(copy, [dict(NOT_COMPUTED, name="20 + 22")])

    def test_import(self):
        """base_import ends in load(): operands import, a state column is refused."""
        Operation = self.Operation.with_user(self.user)
        loaded = Operation.load(["field_1", "field_2"], [["3", "4"]])
        self.assertFalse(loaded["messages"])
        self.assertRecordValues(Operation.browse(loaded["ids"]), [dict(NOT_COMPUTED, name="3 + 4")])
        loaded = Operation.load(["field_1", "field_2", "state"], [["3", "4", "done"]])
        self.assertFalse(loaded["ids"])
        self.assertIn(REFUSED_MESSAGE, loaded["messages"][0]["message"])

    def test_internal_path_writes_bridge_fields_only(self):
        with self.assertRaises(ValueError):
            self.new_operation(1, 1)._write_bridge_fields({"field_1": 5})


@tagged("post_install", "-at_install")
class TestForgingOverRpc(HttpCase):
    """A forged write as an external program would send it, through Odoo's HTTP server."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ComputeBridgeCase.set_broker(cls.env, BROKER_URL)
        cls.clients = {
            "user": new_test_user(cls.env, "cb_int_user", password=PASSWORD,
                                  groups="base.group_user," + USER_GROUP),
            "manager": new_test_user(cls.env, "cb_int_manager", password=PASSWORD,
                                     groups="base.group_user," + MANAGER_GROUP),
            "admin": new_test_user(cls.env, "cb_int_admin", password=PASSWORD,
                                   groups=ADMIN_GROUPS),
        }

    def xmlrpc(self, user, method, *args, **kwargs):
        return self.xmlrpc_object.execute_kw(
            self.env.cr.dbname, user.id, PASSWORD, "compute.operation", method, list(args),
            kwargs)

    def jsonrpc(self, user, method, *args, **kwargs):
        """call_kw as the web client sends it; the error's message, or the result."""
        self.authenticate(user.login, PASSWORD)
        response = self.url_open("/web/dataset/call_kw", data=json.dumps({
            "jsonrpc": "2.0", "method": "call", "id": 0, "params": {
                "model": "compute.operation", "method": method, "args": list(args),
                "kwargs": kwargs},
        }), headers={"Content-Type": "application/json"})
        response.raise_for_status()
        reply = response.json()
        if "error" in reply:
            raise UserError(reply["error"]["data"]["message"])
        return reply["result"]

    def assert_not_computed(self, operation_id):
        [record] = self.xmlrpc(self.clients["user"], "read", [operation_id],
                               fields=list(NOT_COMPUTED))
        self.assertEqual({name: record[name] for name in NOT_COMPUTED}, NOT_COMPUTED)

    def test_forged_write_over_xmlrpc(self):
        operation_id = self.xmlrpc(self.clients["user"], "create", {"field_1": 1, "field_2": 1})
        admin_id = self.clients["admin"].id
        for role, user in self.clients.items():
            for context in ({}, FORGED_CONTEXT):
                with self.subTest(role=role, context=context), \
                        self.assertRaises(xmlrpc.client.Fault) as caught:
                    self.xmlrpc(user, "write", [operation_id],
                                dict(FORGED, computed_by=admin_id), context=context)
                self.assertIn(REFUSED_MESSAGE, caught.exception.faultString)
        self.assert_not_computed(operation_id)

    def test_forged_create_over_xmlrpc(self):
        for role, user in self.clients.items():
            with self.subTest(role=role), self.assertRaises(xmlrpc.client.Fault) as caught:
                self.xmlrpc(user, "create", dict(FORGED, field_1=1, field_2=1),
                            context=FORGED_CONTEXT)
            self.assertIn(REFUSED_MESSAGE, caught.exception.faultString)
        operation_id = self.xmlrpc(self.clients["user"], "create", {"field_1": 1, "field_2": 1},
                                   context=FORGED_CONTEXT)
        self.assert_not_computed(operation_id)

    def test_forged_write_over_jsonrpc(self):
        operation_id = self.xmlrpc(self.clients["user"], "create", {"field_1": 1, "field_2": 1})
        for role, user in self.clients.items():
            for context in ({}, FORGED_CONTEXT):
                with self.subTest(role=role, context=context), \
                        self.assertRaisesRegex(UserError, REFUSED_MESSAGE):
                    self.jsonrpc(user, "write", [operation_id], FORGED, context=context)
                with self.subTest(role=role, context=context), \
                        self.assertRaisesRegex(UserError, REFUSED_MESSAGE):
                    self.jsonrpc(user, "web_save", [operation_id], FORGED, specification={},
                                 context=context)
        self.assert_not_computed(operation_id)

    def test_an_edited_operand_over_xmlrpc_clears_the_result(self):
        user = self.clients["user"]
        operation_id = self.xmlrpc(user, "create", {"field_1": 1, "field_2": 1})
        self.xmlrpc(user, "action_suma", [operation_id])
        self.xmlrpc(user, "write", [operation_id], {"field_1": 500})
        [record] = self.xmlrpc(user, "read", [operation_id], fields=["name", "result", "state"])
        self.assertEqual((record["name"], record["result"], record["state"]),
                         ("500 + 1", 0.0, "draft"))

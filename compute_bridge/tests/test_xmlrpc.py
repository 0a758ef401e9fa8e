"""XML-RPC through Odoo's real HTTP server, as an external program would call the addon."""

import xmlrpc.client

from odoo.tests import HttpCase, new_test_user, tagged

from .common import BROKER_URL, USER_GROUP, ComputeBridgeCase

PASSWORD = "cb-rpc-user-password"


@tagged("post_install", "-at_install")
class TestXmlRpc(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ComputeBridgeCase.set_broker(cls.env, BROKER_URL)
        cls.rpc_user = new_test_user(
            cls.env, "cb_rpc_user", password=PASSWORD, groups="base.group_user," + USER_GROUP)

    def execute(self, method, *args, **kwargs):
        return self.xmlrpc_object.execute_kw(
            self.env.cr.dbname, self.rpc_user.id, PASSWORD,
            "compute.operation", method, list(args), kwargs)

    def test_create_and_suma(self):
        operation_id = self.execute("create", {"field_1": 99999, "field_2": 99999})
        self.assertIsInstance(operation_id, int)
        action = self.execute("action_suma", [operation_id])
        self.assertIsInstance(action, dict)
        self.assertIn("199998", action["params"]["message"])
        [record] = self.execute("read", [operation_id], fields=["result", "state"])
        self.assertEqual((record["result"], record["state"]), (199998.0, "done"))

    def test_compute_sum(self):
        self.assertEqual(self.execute("compute_sum", 1.5, 2.5), 4.0)

    def test_compute_sum_refused_operand_is_a_readable_fault(self):
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            self.execute("compute_sum", "abc", 1)
        self.assertEqual(caught.exception.faultCode, 2)  # a UserError/ValidationError
        self.assertIn("First Value must be a finite number, not 'abc' (str).",
                      caught.exception.faultString)

    def test_hostile_create_is_a_readable_fault(self):
        for value in ("\u202e123", [1], {"a": 1}, "nan"):
            with self.subTest(value=value), self.assertRaises(xmlrpc.client.Fault) as caught:
                self.execute("create", {"field_1": value, "field_2": 1})
            self.assertEqual(caught.exception.faultCode, 2)
            self.assertNotIn("Traceback", caught.exception.faultString)

    def test_broker_unreachable_is_a_plain_reply(self):
        ComputeBridgeCase.set_broker(self.env, "pyamqp://guest:guest@127.0.0.1:1")
        operation_id = self.execute("create", {"field_1": 1, "field_2": 2})
        action = self.execute("action_suma", [operation_id])
        self.assertEqual(action["params"]["type"], "danger")
        [record] = self.execute("read", [operation_id], fields=["state", "error_message"])
        self.assertEqual(record["state"], "failed")
        self.assertIn("guest:***@127.0.0.1:1", record["error_message"])

    def test_call_later_returns_the_call_id(self):
        """An RPC client gets the id of the call it queued (a record cannot be marshalled:
        the client would see a Fault for a call that is queued, and queue it again)."""
        self.rpc_user.groups_id |= self.env.ref("compute_bridge.group_compute_bridge_any_service")
        call_id = self.xmlrpc_object.execute_kw(
            self.env.cr.dbname, self.rpc_user.id, PASSWORD,
            "compute.bridge", "call_later", ["compute", "method", [1, 2]], {})
        self.assertIsInstance(call_id, int)
        call = self.env["compute.bridge.call"].browse(call_id)
        self.assertRecordValues(call, [{"display_method": "compute.method",
                                        "args_json": "[1,2]", "state": "queued"}])

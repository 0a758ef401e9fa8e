import re

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from ..rpc import BROKER_URL_ENV_VAR, ServiceUnavailable, read_config
from ..rpc.probe import probe_compute
from .common import BROKER_URL, CLOSED_PORT_URL, SECRET, TEST_RPC_TIMEOUT, ComputeBridgeCase

SUCCESS = re.compile(r"^Broker and compute service reachable: 1 \+ 1 = 2 in \d+\.\d ms$")


@tagged("post_install", "-at_install")
class TestTestConnection(ComputeBridgeCase):
    """Settings > Compute Bridge > Test connection, against the broker and the running services."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")

    def press_test_connection(self, url):
        """Press the button as the administrator, with ``url`` on screen (not saved)."""
        settings = self.env["res.config.settings"].with_user(self.admin).create({
            "compute_bridge_broker_url": url,
            "compute_bridge_rpc_timeout": TEST_RPC_TIMEOUT,
        })
        action = settings.action_compute_bridge_test_connection()
        self.assertEqual(action["tag"], "display_notification")
        return action["params"]

    def test_reachable_reports_the_round_trip(self):
        params = self.press_test_connection(BROKER_URL)
        self.assertEqual(params["type"], "success", params["message"])
        self.assertRegex(params["message"], SUCCESS)

    def test_closed_port_reports_a_masked_failure(self):
        params = self.press_test_connection(CLOSED_PORT_URL)
        self.assertEqual(params["type"], "danger")
        self.assertTrue(params["sticky"], "a failure stays until read")
        self.assertIn("Cannot reach the message broker", params["message"])
        text = params["title"] + params["message"]
        self.assertNotIn(SECRET, text)
        self.assertIn("guest:***@127.0.0.1:1", text)

    def test_masked_password_on_screen_is_the_saved_one(self):
        """Settings shows the saved URL masked: testing it as shown uses the saved password,
        which never follows a URL edited to point to another host."""
        self.set_broker(self.env, BROKER_URL)
        shown = self.env["res.config.settings"].with_user(self.admin).default_get(
            ["compute_bridge_broker_url"])["compute_bridge_broker_url"]
        self.assertIn(":***@", shown)
        params = self.press_test_connection(shown)
        self.assertEqual(params["type"], "success", params["message"])
        self.set_broker(self.env, CLOSED_PORT_URL)
        params = self.press_test_connection("pyamqp://guest:***@127.0.0.1:1")
        self.assertEqual(params["type"], "danger")
        self.assertNotIn(SECRET, params["title"] + params["message"])
        with self.assertRaisesRegex(UserError, "type it again"):
            self.press_test_connection("pyamqp://guest:***@elsewhere.invalid:1")

    def test_only_managers_test_the_connection(self):
        settings = self.env["res.config.settings"].create({})
        with self.assertRaises(AccessError):
            settings.with_user(self.user).action_compute_bridge_test_connection()

    def test_probe_names_a_missing_service(self):
        config = read_config({}.get, {BROKER_URL_ENV_VAR: BROKER_URL})
        with self.assertRaises(ServiceUnavailable):
            probe_compute(config, service="compute_bridge_no_such_service")

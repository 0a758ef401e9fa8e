import re

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

    def test_probe_names_a_missing_service(self):
        config = read_config({}.get, {BROKER_URL_ENV_VAR: BROKER_URL})
        with self.assertRaises(ServiceUnavailable):
            probe_compute(config, service="compute_bridge_no_such_service")

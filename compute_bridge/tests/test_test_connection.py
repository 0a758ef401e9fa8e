import os
import re
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, tagged

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, ServiceUnavailable, read_config
from ..rpc.probe import probe_compute
from .common import BROKER_URL, CLOSED_PORT_URL, SECRET, TEST_RPC_TIMEOUT, ComputeBridgeCase

TOUR_TIMEOUT = 120  # seconds: asset bundles are built on the first visit, on 2 shared cores
SUCCESS = re.compile(r"^Broker and compute service reachable: 1 \+ 1 = 2 in \d+\.\d ms$")


@tagged("post_install", "-at_install")
class TestTestConnection(ComputeBridgeCase):
    """Settings > Compute Bridge > Test connection, against the broker and the running services."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")

    def press_test_connection(self, url, timeout=TEST_RPC_TIMEOUT):
        """Press the button as the administrator, with ``url`` on screen (not saved)."""
        settings = self.env["res.config.settings"].with_user(self.admin).create({
            "compute_bridge_broker_url": url,
            "compute_bridge_rpc_timeout": timeout,
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

    def test_unsaved_url_is_the_one_tested(self):
        """The saved URL works, the one on screen does not: the failure is reported, and
        nothing is saved."""
        self.set_broker(self.env, BROKER_URL)
        params = self.press_test_connection(CLOSED_PORT_URL)
        self.assertEqual(params["type"], "danger", params["message"])
        self.assertIn("127.0.0.1:1", params["title"])
        self.assertEqual(
            self.env["ir.config_parameter"].sudo().get_param(BROKER_URL_PARAM), BROKER_URL)

    def test_malformed_values_on_screen_give_the_reason(self):
        for url, timeout, reason in (
            ("http://localhost:5672", TEST_RPC_TIMEOUT, 'scheme "http" is not an AMQP one'),
            ("pyamqp://guest:%s@rabbit:99999" % SECRET, TEST_RPC_TIMEOUT, "port must be"),
            ("pyamqp://rabbit/" + "v" * 100_000, TEST_RPC_TIMEOUT, "longer than"),
            (BROKER_URL, -5, "RPC timeout must be a number of seconds from 0.1 to 60"),
            (BROKER_URL, 1e9, "RPC timeout must be a number of seconds from 0.1 to 60"),
        ):
            with self.subTest(url=url[:40], timeout=timeout):
                params = self.press_test_connection(url, timeout)
                self.assertEqual(params["type"], "danger")
                self.assertIn(reason, params["message"])
                self.assertNotIn(SECRET, params["title"] + params["message"])
                self.assertLess(len(params["title"] + params["message"]), 200)

    def test_environment_override_is_never_a_plain_success(self):
        """The URL on screen works, but operations use the environment's: the notification
        is a warning that says so."""
        with patch.dict(os.environ, {BROKER_URL_ENV_VAR: CLOSED_PORT_URL}):
            params = self.press_test_connection(BROKER_URL)
        self.assertEqual(params["type"], "warning", params["message"])
        self.assertIn("reachable", params["message"])
        self.assertIn(BROKER_URL_ENV_VAR, params["message"])

    def test_button_skips_the_save_dialog(self):
        arch = self.env["res.config.settings"].get_view(
            self.env.ref("compute_bridge.res_config_settings_view_form").id)["arch"]
        self.assertRegex(
            arch, r'<button name="action_compute_bridge_test_connection"[^>]*noSaveDialog="true"')

    def test_only_administrators_test_the_connection(self):
        settings = self.env["res.config.settings"].create({})
        for user in (self.user, self.manager):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                settings.with_user(user).action_compute_bridge_test_connection()

    def test_probe_names_a_missing_service(self):
        config = read_config({}.get, {BROKER_URL_ENV_VAR: BROKER_URL})
        with self.assertRaises(ServiceUnavailable):
            probe_compute(config, service="compute_bridge_no_such_service")


@tagged("post_install", "-at_install")
class TestTestConnectionInBrowser(HttpCase):
    """Settings in a real browser: with the saved URL working, type one that is not, press Test
    connection: the one on screen is tested at once (no "save first?" dialog, no false success),
    and nothing is saved."""

    def test_unsaved_url_in_the_browser(self):
        ComputeBridgeCase.set_broker(self.env, BROKER_URL)
        self.start_tour("/odoo/action-compute_bridge.compute_bridge_settings_action",
                        "compute_bridge_test_connection_tour", login="admin", timeout=TOUR_TIMEOUT)
        self.assertEqual(self.env["ir.config_parameter"].get_param(BROKER_URL_PARAM), BROKER_URL)

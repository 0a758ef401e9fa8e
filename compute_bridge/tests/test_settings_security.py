"""Settings round trip, the environment override notice, and who may do what."""

import os
from unittest.mock import patch

from odoo.exceptions import AccessError

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, RPC_TIMEOUT_PARAM
from .common import CLOSED_PORT_URL, ComputeBridgeCase


class TestSettings(ComputeBridgeCase):
    def test_round_trip(self):
        settings = self.env["res.config.settings"].create({
            "compute_bridge_broker_url": " pyamqp://u:p@rabbit:5672 ",
            "compute_bridge_rpc_timeout": 2.5,
        })
        settings.execute()
        ICP = self.env["ir.config_parameter"].sudo()
        self.assertEqual(ICP.get_param(BROKER_URL_PARAM), "pyamqp://u:p@rabbit:5672")
        self.assertEqual(float(ICP.get_param(RPC_TIMEOUT_PARAM)), 2.5)
        reopened = self.env["res.config.settings"].create({})
        self.assertEqual(reopened.compute_bridge_broker_url, "pyamqp://u:p@rabbit:5672")
        self.assertEqual(reopened.compute_bridge_rpc_timeout, 2.5)
        self.assertFalse(reopened.compute_bridge_broker_url_from_env)
        config = self.Operation._compute_bridge_config()
        self.assertEqual((config.broker_url, config.timeout), ("pyamqp://u:p@rabbit:5672", 2.5))

    def test_environment_override_is_shown(self):
        with patch.dict(os.environ, {BROKER_URL_ENV_VAR: CLOSED_PORT_URL}):
            settings = self.env["res.config.settings"].create({})
            self.assertTrue(settings.compute_bridge_broker_url_from_env)
            self.assertEqual(self.Operation._compute_bridge_config().broker_url, CLOSED_PORT_URL)

    def test_settings_view_hides_the_url(self):
        arch = self.env["res.config.settings"].get_view(
            self.env.ref("compute_bridge.res_config_settings_view_form").id)["arch"]
        self.assertIn('name="compute_bridge_broker_url"', arch)
        self.assertRegex(arch, r'name="compute_bridge_broker_url"[^>]*password="True"')


class TestAccess(ComputeBridgeCase):
    def test_user_computes(self):
        operation = self.new_operation(1, 2, user=self.user)
        operation.with_user(self.user).action_suma()
        self.assertEqual(operation.state, "done")
        with self.assertRaises(AccessError):
            operation.with_user(self.user).unlink()

    def test_user_cannot_change_settings(self):
        with self.assertRaises(AccessError):
            self.env["res.config.settings"].with_user(self.user).create({})
        with self.assertRaises(AccessError):
            self.env["ir.config_parameter"].with_user(self.user).set_param(
                BROKER_URL_PARAM, CLOSED_PORT_URL)

    def test_manager_opens_settings_and_deletes(self):
        settings = self.env["res.config.settings"].with_user(self.manager).create({})
        self.assertTrue(settings.compute_bridge_broker_url)
        menu = self.env.ref("compute_bridge.compute_bridge_settings_menu")
        self.assertIn(menu.id, self.env["ir.ui.menu"].with_user(self.manager)._visible_menu_ids())
        self.assertNotIn(menu.id, self.env["ir.ui.menu"].with_user(self.user)._visible_menu_ids())
        operation = self.new_operation(1, 2, user=self.manager)
        operation.with_user(self.manager).unlink()

    def test_admin_is_manager(self):
        self.assertTrue(self.env.ref("base.user_admin").has_group(
            "compute_bridge.group_compute_bridge_manager"))
        self.assertTrue(self.manager.has_group("compute_bridge.group_compute_bridge_user"))

    def test_portal_and_public_get_nothing(self):
        public = self.env.ref("base.public_user")
        for user in (self.portal_user, public):
            Operation = self.env["compute.operation"].with_user(user)
            with self.subTest(user=user.login):
                for operation in ("read", "create", "write"):
                    self.assertFalse(Operation.has_access(operation), operation)
                with self.assertRaises(AccessError):
                    Operation.compute_sum(1, 2)

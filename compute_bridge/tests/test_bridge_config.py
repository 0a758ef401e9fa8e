"""Broker Settings for Compute Bridge managers: only the bridge's two parameters, the password
never read back."""

from odoo.exceptions import AccessError, UserError, ValidationError

from ..rpc import BROKER_URL_PARAM, RPC_TIMEOUT_PARAM
from .common import SECRET, ComputeBridgeCase

SECRET_URL = "pyamqp://u:%s@rabbit:5672/vhost" % SECRET


class TestBridgeConfig(ComputeBridgeCase):
    def open_as(self, user):
        return self.env["compute.bridge.config"].with_user(user)

    def test_manager_who_is_not_admin_configures_the_bridge(self):
        self.assertFalse(self.manager.has_group("base.group_system"))
        self.open_as(self.manager).create(
            {"broker_url": SECRET_URL, "rpc_timeout": 2.5}).action_save()
        ICP = self.env["ir.config_parameter"].sudo()
        self.assertEqual(ICP.get_param(BROKER_URL_PARAM), SECRET_URL)
        self.assertEqual(float(ICP.get_param(RPC_TIMEOUT_PARAM)), 2.5)

    def test_password_is_shown_masked_and_kept(self):
        self.set_broker(self.env, SECRET_URL)
        wizard = self.open_as(self.manager).create({})
        self.assertEqual(wizard.broker_url, "pyamqp://u:***@rabbit:5672/vhost")
        self.assertNotIn(SECRET, str(wizard.read()))
        wizard.action_save()  # unchanged on screen: the saved password stays
        self.assertEqual(
            self.env["ir.config_parameter"].sudo().get_param(BROKER_URL_PARAM), SECRET_URL)

    def test_masked_password_is_not_carried_to_another_host(self):
        self.set_broker(self.env, SECRET_URL)
        wizard = self.open_as(self.manager).create(
            {"broker_url": "pyamqp://u:***@elsewhere:5672/vhost"})
        with self.assertRaises(UserError):
            wizard.action_save()

    def test_timeout_must_be_positive(self):
        wizard = self.open_as(self.manager).create({"rpc_timeout": 0})
        with self.assertRaises(ValidationError):
            wizard.action_save()

    def test_plain_users_cannot_open_it(self):
        with self.assertRaises(AccessError):
            self.open_as(self.user).create({})

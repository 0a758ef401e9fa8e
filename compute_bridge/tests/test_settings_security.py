"""Settings round trip, the masked broker password, the environment override notice, and who
may do what."""

import os
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, DEFAULT_BROKER_URL, RPC_TIMEOUT_PARAM
from .common import CLOSED_PORT_URL, SECRET, ComputeBridgeCase

SECRET_URL = "pyamqp://u:%s@rabbit:5672/vhost" % SECRET
MASKED_URL = "pyamqp://u:***@rabbit:5672/vhost"


class SettingsCase(ComputeBridgeCase):
    def save(self, url, user=None):
        """Save Settings with ``url`` on screen as ``user``; return the stored parameter."""
        settings = self.env["res.config.settings"].with_user(user or self.env.user)
        settings.create({"compute_bridge_broker_url": url}).execute()
        return self.env["ir.config_parameter"].sudo().get_param(BROKER_URL_PARAM)

    def shown_url(self, user=None):
        """The broker URL Settings shows ``user`` (what the form's default_get returns)."""
        settings = self.env["res.config.settings"].with_user(user or self.env.user)
        return settings.default_get(["compute_bridge_broker_url"])["compute_bridge_broker_url"]


class TestSettings(SettingsCase):
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
        self.assertEqual(reopened.compute_bridge_broker_url, "pyamqp://u:***@rabbit:5672")
        self.assertEqual(reopened.compute_bridge_rpc_timeout, 2.5)
        self.assertFalse(reopened.compute_bridge_broker_url_from_env)
        config = self.Operation._compute_bridge_config()
        self.assertEqual((config.broker_url, config.timeout), ("pyamqp://u:p@rabbit:5672", 2.5))

    def test_password_is_written_never_read_back(self):
        admin = self.env.ref("base.user_admin")
        self.assertEqual(self.save(SECRET_URL, admin), SECRET_URL)
        self.assertEqual(self.shown_url(admin), MASKED_URL)
        settings = self.env["res.config.settings"].with_user(admin).create({})
        self.assertEqual(settings.read(["compute_bridge_broker_url"])[0][
            "compute_bridge_broker_url"], MASKED_URL)
        # saved as shown: the password stays; the vhost edited: the password stays too
        self.assertEqual(self.save(MASKED_URL, admin), SECRET_URL)
        self.assertEqual(self.save(MASKED_URL.replace("/vhost", "/other"), admin),
                         SECRET_URL.replace("/vhost", "/other"))
        # a new password is taken as typed, and shown masked
        new_url = "pyamqp://u:new@rabbit:5672"
        self.assertEqual(self.save(new_url, admin), new_url)
        self.assertEqual(self.shown_url(admin), "pyamqp://u:***@rabbit:5672")

    def test_masked_password_never_follows_another_host(self):
        self.save(SECRET_URL)
        for url in ("pyamqp://u:***@evil:5672/vhost", "pyamqp://other:***@rabbit:5672/vhost",
                    "pyamqp://u:***@rabbit:5673/vhost"):
            with self.subTest(url=url), self.assertRaises(UserError) as caught:
                self.save(url)
            self.assertNotIn(SECRET, str(caught.exception))
        self.assertEqual(self.env["ir.config_parameter"].sudo().get_param(BROKER_URL_PARAM),
                         SECRET_URL)

    def test_default_url_is_shown_masked_and_not_saved(self):
        self.env["ir.config_parameter"].sudo().set_param(BROKER_URL_PARAM, False)
        self.assertEqual(self.shown_url(), "pyamqp://guest:***@localhost")
        self.assertFalse(self.save(self.shown_url()), "the default stays a default")
        self.assertEqual(self.Operation._compute_bridge_config().broker_url, DEFAULT_BROKER_URL)
        self.save(SECRET_URL)
        self.assertFalse(self.save(""), "an empty URL goes back to the default")

    def test_environment_override_is_shown(self):
        with patch.dict(os.environ, {BROKER_URL_ENV_VAR: CLOSED_PORT_URL}):
            settings = self.env["res.config.settings"].create({})
            self.assertTrue(settings.compute_bridge_broker_url_from_env)
            self.assertEqual(self.Operation._compute_bridge_config().broker_url, CLOSED_PORT_URL)

    def test_settings_view_hides_the_url(self):
        self.save(SECRET_URL)
        arch = self.env["res.config.settings"].get_view(
            self.env.ref("compute_bridge.res_config_settings_view_form").id)["arch"]
        self.assertIn('name="compute_bridge_broker_url"', arch)
        self.assertRegex(arch, r'name="compute_bridge_broker_url"[^>]*password="True"')
        self.assertNotIn(SECRET, arch)


class TestAccess(SettingsCase):
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

    def test_only_managers_are_shown_the_url(self):
        """default_get reads parameters with sudo() for anyone: the URL is left to get_values,
        which shows it (masked) to the bridge's managers only."""
        self.set_broker(self.env, SECRET_URL)
        for user in (self.user, self.portal_user):
            with self.subTest(user=user.login):
                self.assertFalse(self.shown_url(user))
        self.assertEqual(self.shown_url(self.env.ref("base.user_admin")), MASKED_URL)

    def test_manager_loads_the_settings_view_only(self):
        """Saving Settings writes every application's parameters with sudo(): administrators
        only (they are managers too). The bridge's manager may load the form's view, but
        neither create Settings, nor read the administrators' records, nor call set_values()."""
        self.save(SECRET_URL, self.env.ref("base.user_admin"))
        admin_settings = self.env["res.config.settings"].with_user(
            self.env.ref("base.user_admin")).create({"web_app_name": "typed by the admin"})
        Settings = self.env["res.config.settings"].with_user(self.manager)
        views = Settings.get_views([[False, "form"]])
        self.assertNotIn(SECRET, str(views))
        with self.assertRaises(AccessError):
            Settings.create({})
        self.assertFalse(Settings.search([("id", "=", admin_settings.id)]))
        with self.assertRaises(AccessError):
            admin_settings.with_user(self.manager).read(["web_app_name"])
        app_name = self.env["ir.config_parameter"].sudo().get_param("web.web_app_name")
        with self.assertRaises(AccessError):
            Settings.set_values()  # an empty recordset would save every field as empty
        self.assertEqual(
            self.env["ir.config_parameter"].sudo().get_param("web.web_app_name"), app_name)
        menus = self.env["ir.ui.menu"].with_user(self.manager)._visible_menu_ids()
        self.assertNotIn(self.env.ref("compute_bridge.compute_bridge_settings_menu").id, menus)
        self.assertNotIn(self.env.ref("compute_bridge.compute_bridge_menu_configuration").id, menus)
        admin_menus = self.env["ir.ui.menu"].with_user(self.env.ref("base.user_admin"))
        self.assertIn(self.env.ref("compute_bridge.compute_bridge_settings_menu").id,
                      admin_menus._visible_menu_ids())

    def test_settings_saved_by_non_managers_leave_the_url(self):
        """A user given res.config.settings by another application saves the other settings,
        not the broker URL, and may not test the connection."""
        other_app = self.env["res.groups"].create({"name": "Another app's settings"})
        for model, perms in (("res_config_settings", ("read", "write", "create")),
                             ("ir_module_module", ("read",))):  # Settings reads module_* fields
            self.env["ir.model.access"].create({
                "name": "%s for another app" % model, "group_id": other_app.id,
                "model_id": self.env.ref("base.model_" + model).id,
                **{"perm_" + perm: True for perm in perms},
            })
        self.user.groups_id += other_app
        self.set_broker(self.env, SECRET_URL)
        self.assertFalse(self.shown_url(self.user))
        settings = self.env["res.config.settings"].with_user(self.user).create(
            {"compute_bridge_broker_url": CLOSED_PORT_URL})
        settings.set_values()
        self.assertEqual(self.env["ir.config_parameter"].sudo().get_param(BROKER_URL_PARAM),
                         SECRET_URL)
        with self.assertRaises(AccessError):
            settings.with_user(self.user).action_compute_bridge_test_connection()

    def test_manager_deletes(self):
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

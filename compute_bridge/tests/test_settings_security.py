"""Settings round trip, the masked broker password, the environment override notice, and who
may do what: Odoo's Settings page is the bridge's one settings path, for administrators."""

import json
import os
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, new_test_user, tagged

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, DEFAULT_BROKER_URL, RPC_TIMEOUT_PARAM
from .common import CLOSED_PORT_URL, MANAGER_GROUP, SECRET, USER_GROUP, ComputeBridgeCase

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
        config = self.env["compute.bridge"]._config()
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
        self.assertEqual(self.env["compute.bridge"]._config().broker_url, DEFAULT_BROKER_URL)
        self.save(SECRET_URL)
        self.assertFalse(self.save(""), "an empty URL goes back to the default")

    def test_environment_override_is_shown(self):
        with patch.dict(os.environ, {BROKER_URL_ENV_VAR: CLOSED_PORT_URL}):
            settings = self.env["res.config.settings"].create({})
            self.assertTrue(settings.compute_bridge_broker_url_from_env)
            self.assertEqual(self.env["compute.bridge"]._config().broker_url, CLOSED_PORT_URL)

    def test_settings_view_shows_the_url_as_text(self):
        """Which broker is configured is visible; only its password is masked (get_values)."""
        self.save(SECRET_URL)
        arch = self.env["res.config.settings"].get_view(
            self.env.ref("compute_bridge.res_config_settings_view_form").id)["arch"]
        self.assertRegex(arch, r'<field name="compute_bridge_broker_url"')
        self.assertNotRegex(arch, r'name="compute_bridge_broker_url"[^>]*password=')
        self.assertNotIn(SECRET, arch)

    def test_one_settings_path(self):
        """The managers' wizard is gone: Odoo's Settings page is the only one."""
        self.assertNotIn("compute.bridge.config", self.env)
        for xmlid in ("compute_bridge_config_menu", "compute_bridge_config_action",
                      "compute_bridge_config_view_form", "access_compute_bridge_config_manager",
                      "access_res_config_settings_compute_bridge_manager_view",
                      "res_config_settings_rule_compute_bridge_manager"):
            with self.subTest(xmlid=xmlid):
                self.assertFalse(self.env.ref("compute_bridge." + xmlid, False))


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

    def test_only_administrators_read_settings(self):
        """Odoo's default_get() and onchange() read config parameters with sudo(): nobody but
        administrators may call them, nor read Settings in any other way."""
        self.set_broker(self.env, SECRET_URL)
        admin = self.env.ref("base.user_admin")
        admin_settings = self.env["res.config.settings"].with_user(admin).create({})
        spec = {"compute_bridge_broker_url": {}, "compute_bridge_rpc_timeout": {},
                "compute_bridge_broker_url_from_env": {}}
        for user in (self.user, self.manager, self.portal_user, self.env.ref("base.public_user")):
            Settings = self.env["res.config.settings"].with_user(user)
            theirs = admin_settings.with_user(user)
            for name, method, args in (
                ("default_get", Settings.default_get, [list(spec)]),
                ("onchange", Settings.onchange, [{}, [], spec]),
                ("get_values", Settings.get_values, []),
                ("create", Settings.create, [{}]),
                ("read", theirs.read, [list(spec)]),
                ("web_read", theirs.web_read, [spec]),
                ("test connection", theirs.action_compute_bridge_test_connection, []),
            ):
                with self.subTest(user=user.login, call=name):
                    self.assertRaises(AccessError, method, *args)
        self.assertEqual(self.shown_url(admin), MASKED_URL)

    def test_settings_menu_and_action_for_administrators_only(self):
        admin = self.env.ref("base.user_admin")
        settings_menus = (self.env.ref("compute_bridge.compute_bridge_settings_menu")
                          | self.env.ref("compute_bridge.compute_bridge_menu_configuration"))
        for user in (self.user, self.manager):
            with self.subTest(user=user.login):
                visible = self.env["ir.ui.menu"].with_user(user)._visible_menu_ids()
                self.assertFalse(set(settings_menus.ids) & set(visible))
        visible = self.env["ir.ui.menu"].with_user(admin)._visible_menu_ids()
        self.assertLessEqual(set(settings_menus.ids), set(visible))
        action = self.env.ref("compute_bridge.compute_bridge_settings_action")
        self.assertEqual(action.groups_id, self.env.ref("base.group_system"))

    def test_settings_saved_by_non_administrators_leave_the_url(self):
        """A user given res.config.settings by another application saves the other settings,
        not the broker URL, is not shown it, and may not test the connection."""
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


# What a settings call must never hand out: the broker's host, user, vhost and the timeout.
LEAK_HOST, LEAK_USER, LEAK_VHOST, LEAK_TIMEOUT = "leak-host", "leakuser", "leakvhost", 7.25
LEAK_URL = "pyamqp://%s:%s@%s:5672/%s" % (LEAK_USER, SECRET, LEAK_HOST, LEAK_VHOST)
# Their fields; the managers' wizard (compute.bridge.config) handed them to portal users.
SETTINGS_FIELDS = {
    "res.config.settings": ["compute_bridge_broker_url", "compute_bridge_rpc_timeout",
                            "compute_bridge_broker_url_from_env"],
    "compute.bridge.config": ["broker_url", "rpc_timeout", "broker_url_from_env"],
}


@tagged("post_install", "-at_install")
class TestSettingsOverJsonRpc(HttpCase):
    """What the web client's own route gives portal, public and plain users and the bridge's
    managers who are not administrators: an error, never the broker URL or the timeout."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ComputeBridgeCase.set_broker(cls.env, LEAK_URL)
        cls.env["ir.config_parameter"].set_param(RPC_TIMEOUT_PARAM, LEAK_TIMEOUT)
        for login, groups in (("cb_json_portal", "base.group_portal"),
                              ("cb_json_user", "base.group_user," + USER_GROUP),
                              ("cb_json_manager", "base.group_user," + MANAGER_GROUP)):
            new_test_user(cls.env, login, groups=groups)  # password = login

    def call_kw(self, model, method, args, kwargs=None):
        """POST /web/dataset/call_kw as the web client does; the raw JSON reply."""
        payload = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
            "model": model, "method": method, "args": args, "kwargs": kwargs or {}}}
        response = self.url_open("/web/dataset/call_kw/%s/%s" % (model, method),
                                 data=json.dumps(payload),
                                 headers={"Content-Type": "application/json"})
        return response.text

    def test_no_settings_for_anyone_but_administrators(self):
        for login in (None, "cb_json_portal", "cb_json_user", "cb_json_manager"):
            self.authenticate(login, login)  # None: no session, as the public
            for model, fields in SETTINGS_FIELDS.items():
                spec = {name: {} for name in fields}
                for method, args, kwargs in (
                    ("default_get", [fields], {}),
                    ("onchange", [[], {}, [], spec], {}),
                    ("web_read", [[1]], {"specification": spec}),
                    ("read", [[1], fields], {}),
                    ("get_values", [[]], {}),
                ):
                    with self.subTest(login=login, model=model, method=method):
                        reply = self.call_kw(model, method, args, kwargs)
                        self.assertIn('"error"', reply)
                        self.assertNotIn('"result"', reply)
                        for leak in (LEAK_HOST, LEAK_USER, LEAK_VHOST, SECRET, str(LEAK_TIMEOUT)):
                            self.assertNotIn(leak, reply)
                        if login and model == "res.config.settings":
                            self.assertIn("odoo.exceptions.AccessError", reply)

    def test_administrator_sees_the_masked_url(self):
        self.authenticate("admin", "admin")
        fields = SETTINGS_FIELDS["res.config.settings"]
        reply = json.loads(self.call_kw("res.config.settings", "default_get", [fields]))
        self.assertEqual(reply["result"]["compute_bridge_broker_url"],
                         LEAK_URL.replace(SECRET, "***"))
        self.assertEqual(reply["result"]["compute_bridge_rpc_timeout"], LEAK_TIMEOUT)

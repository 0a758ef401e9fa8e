"""The bridge's two system parameters obey one rule wherever they are written: Odoo's Settings,
the System Parameters list (ir.config_parameter's create and write) and XML-RPC."""

import xmlrpc.client

from odoo.exceptions import ValidationError
from odoo.tests import HttpCase, tagged

from ..rpc import BROKER_URL_PARAM, DEFAULT_RPC_TIMEOUT, RPC_TIMEOUT_PARAM
from .common import BROKER_URL, SECRET, TEST_RPC_TIMEOUT, ComputeBridgeCase

# Each malformed URL, with what the refusal must say. None of them reached a call before.
MALFORMED_URLS = {
    "http://localhost:5672": 'scheme "http" is not an AMQP one',
    "redis://guest:%s@localhost:6379/0" % SECRET: 'scheme "redis" is not an AMQP one',
    "pyamqp://guest:%s@rabbit:99999" % SECRET: "port must be a whole number from 1 to 65535",
    "abc": "has no scheme",
    "pyamqp://guest:%s@rabbit/%s" % (SECRET, "v" * 100_000): "longer than 4096 characters",
    "pyamqp://guest:%s@rabbit/%s" % (SECRET, "v" * 256): "virtual host is 256 bytes long",
    "pyamqp://guest:%s@:5672/" % SECRET: "names no host",
    "pyamqp://guest:%s@rabbit;" % SECRET: "failover list",
}
WELL_FORMED_URLS = (
    "amqps://u:p@rabbit-1:5671/prod;amqps://u:p@rabbit-2:5671/prod",
    "pyamqps://u:p@[::1]:5671",
)
# Settings saved -5 (and showed it while calls used the default); nothing bounded 1e9.
MALFORMED_TIMEOUTS = ("-5", "1e9", "0.01", "61", "nan", "inf", "abc")


class TestStoredParameters(ComputeBridgeCase):
    def save_settings(self, values):
        self.env["res.config.settings"].create(values).execute()

    def assertRefused(self, expected, write, *args):
        """``write(*args)`` raises a ValidationError saying ``expected``, without the password."""
        with self.assertRaises(ValidationError) as caught:
            write(*args)
        message = str(caught.exception)
        self.assertIn(expected, message)
        self.assertNotIn(SECRET, message)
        self.assertLess(len(message), 200, "a reason, not the value")

    def test_malformed_url_refused_by_every_writer(self):
        ICP = self.env["ir.config_parameter"]
        param = ICP.search([("key", "=", BROKER_URL_PARAM)])
        for url, expected in MALFORMED_URLS.items():
            with self.subTest(url=url[:60], writer="set_param"):
                self.assertRefused(expected, ICP.set_param, BROKER_URL_PARAM, url)
            with self.subTest(url=url[:60], writer="write"):
                self.assertRefused(expected, param.write, {"value": url})
            with self.subTest(url=url[:60], writer="Settings"):
                self.assertRefused(expected, self.save_settings, {"compute_bridge_broker_url": url})
        param.unlink()
        with self.subTest(writer="create"):
            self.assertRefused('scheme "http"', ICP.create,
                               {"key": BROKER_URL_PARAM, "value": "http://localhost:5672"})
        self.assertFalse(ICP.get_param(BROKER_URL_PARAM))

    def test_well_formed_urls_are_stored(self):
        ICP = self.env["ir.config_parameter"]
        for url in WELL_FORMED_URLS:
            ICP.set_param(BROKER_URL_PARAM, url)
            self.assertEqual(ICP.get_param(BROKER_URL_PARAM), url)
        ICP.set_param(BROKER_URL_PARAM, False)  # unset: back to the default
        self.assertFalse(ICP.get_param(BROKER_URL_PARAM))

    def test_timeout_out_of_range_refused_by_every_writer(self):
        ICP = self.env["ir.config_parameter"]
        expected = "The RPC timeout must be a number of seconds from 0.1 to 60"
        for raw in MALFORMED_TIMEOUTS:
            with self.subTest(timeout=raw, writer="set_param"):
                self.assertRefused(expected, ICP.set_param, RPC_TIMEOUT_PARAM, raw)
        for value in (-5, 1e9):
            with self.subTest(timeout=value, writer="Settings"):
                self.assertRefused(expected, self.save_settings,
                                   {"compute_bridge_rpc_timeout": value})
        ICP.search([("key", "=", RPC_TIMEOUT_PARAM)]).unlink()
        with self.subTest(writer="create"):
            self.assertRefused(expected, ICP.create, {"key": RPC_TIMEOUT_PARAM, "value": "-5"})
        for value in (0.1, 60):
            self.save_settings({"compute_bridge_rpc_timeout": value})
            self.assertEqual(self.env["compute.bridge"]._config().timeout, value)

    def test_settings_show_the_timeout_calls_use(self):
        """A value stored before the rule (here by SQL) is shown as the default calls use."""
        self.env["ir.config_parameter"].flush_model()
        self.env.cr.execute("UPDATE ir_config_parameter SET value = '-5' WHERE key = %s",
                            [RPC_TIMEOUT_PARAM])
        self.env["ir.config_parameter"].invalidate_model()
        self.env.registry.clear_cache()  # get_param is cached
        self.assertEqual(self.env["compute.bridge"]._config().timeout, DEFAULT_RPC_TIMEOUT)
        self.assertEqual(self.env["res.config.settings"].create({}).compute_bridge_rpc_timeout,
                         DEFAULT_RPC_TIMEOUT)


@tagged("post_install", "-at_install")
class TestStoredParametersOverXmlRpc(HttpCase):
    def test_xmlrpc_write_is_refused(self):
        ComputeBridgeCase.set_broker(self.env, BROKER_URL)
        self.env["ir.config_parameter"].set_param(RPC_TIMEOUT_PARAM, TEST_RPC_TIMEOUT)
        uid = self.xmlrpc_common.login(self.env.cr.dbname, "admin", "admin")
        for key, value in ((RPC_TIMEOUT_PARAM, "1e9"), (BROKER_URL_PARAM, "redis://r:6379")):
            with self.subTest(key=key):
                with self.assertRaisesRegex(xmlrpc.client.Fault, "must be|not an AMQP one"):
                    self.xmlrpc_object.execute(self.env.cr.dbname, uid, "admin",
                                               "ir.config_parameter", "set_param", key, value)
        ICP = self.env["ir.config_parameter"]
        self.assertEqual(ICP.get_param(BROKER_URL_PARAM), BROKER_URL)
        self.assertEqual(float(ICP.get_param(RPC_TIMEOUT_PARAM)), TEST_RPC_TIMEOUT)

import os

from odoo import api, fields, models

from ..rpc import (
    BROKER_URL_ENV_VAR,
    BROKER_URL_PARAM,
    DEFAULT_BROKER_URL,
    RPC_TIMEOUT_PARAM,
    BridgeError,
    mask_url,
    read_config,
)
from ..rpc.config import DEFAULT_RPC_TIMEOUT
from ..rpc.probe import probe_compute


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    compute_bridge_broker_url = fields.Char(
        string="Broker URL",
        config_parameter=BROKER_URL_PARAM,
        default=DEFAULT_BROKER_URL,
        help="RabbitMQ URL the Nameko services listen on, e.g. "
        "pyamqp://user:password@rabbitmq:5672/vhost. The environment variable "
        "%s overrides it when set." % BROKER_URL_ENV_VAR,
    )
    compute_bridge_rpc_timeout = fields.Float(
        string="RPC Timeout (s)",
        config_parameter=RPC_TIMEOUT_PARAM,
        default=DEFAULT_RPC_TIMEOUT,
        help="Seconds to wait for a service's reply before the operation is marked failed.",
    )
    compute_bridge_broker_url_from_env = fields.Boolean(
        string="Broker URL Set by the Environment",
        compute="_compute_compute_bridge_broker_url_from_env",
        help="%s is set in the Odoo server's environment: it wins over the URL above."
        % BROKER_URL_ENV_VAR,
    )

    @api.depends("compute_bridge_broker_url")
    def _compute_compute_bridge_broker_url_from_env(self):
        from_env = bool((os.environ.get(BROKER_URL_ENV_VAR) or "").strip())
        for settings in self:
            settings.compute_bridge_broker_url_from_env = from_env

    def action_compute_bridge_test_connection(self):
        """Settings' "Test connection": a real 1 + 1 through the broker and the compute service.

        Uses the values on screen, saved or not, so a URL can be tried before it is saved;
        the environment variable still wins, as it does for every call.
        """
        self.ensure_one()
        on_screen = {
            BROKER_URL_PARAM: self.compute_bridge_broker_url,
            RPC_TIMEOUT_PARAM: self.compute_bridge_rpc_timeout,
        }
        config = read_config(on_screen.get, os.environ)
        title = self.env._("Test connection: %s", mask_url(config.broker_url))
        try:
            probe = probe_compute(config)
        except BridgeError as error:  # str() is readable and has the password masked
            return self._compute_bridge_test_notification(title, str(error), "danger")
        message = self.env._(
            "Broker and compute service reachable: %(a)s + %(b)s = %(result)s in %(ms).1f ms",
            a=probe.operands[0], b=probe.operands[1], result=probe.result, ms=probe.round_trip_ms,
        )
        return self._compute_bridge_test_notification(title, message, "success")

    def _compute_bridge_test_notification(self, title, message, kind):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {"title": title, "message": message, "type": kind,
                       "sticky": kind != "success"},
        }

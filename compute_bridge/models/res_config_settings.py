import os

from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError

from ..rpc import (
    BROKER_URL_ENV_VAR,
    BROKER_URL_PARAM,
    DEFAULT_BROKER_URL,
    RPC_TIMEOUT_PARAM,
    BridgeError,
    mask_url,
    read_config,
)
from ..rpc.config import DEFAULT_RPC_TIMEOUT, MASK, MaskedPassword, unmask_url
from ..rpc.probe import probe_compute

MANAGER_GROUP = "compute_bridge.group_compute_bridge_manager"


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    # Not a config_parameter field: default_get would read the parameter with sudo() for anyone
    # and hand out the password. get_values() shows it masked to managers, set_values() saves it.
    compute_bridge_broker_url = fields.Char(
        string="Broker URL",
        help="RabbitMQ URL the Nameko services listen on, e.g. "
        "pyamqp://user:password@rabbitmq:5672/vhost. The saved password is shown as %s: "
        "leave it so to keep it. The environment variable %s overrides the URL when set."
        % (MASK, BROKER_URL_ENV_VAR),
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

    def get_values(self):
        """The broker URL with its password masked, and only for the bridge's managers."""
        values = super().get_values()
        values["compute_bridge_broker_url"] = (
            mask_url(self._compute_bridge_stored_url())
            if self._compute_bridge_is_manager() else False
        )
        return values

    def set_values(self):
        """Save the broker URL (managers only); a masked password keeps the saved one."""
        super().set_values()
        if not self._compute_bridge_is_manager():
            return
        url = self._compute_bridge_submitted_url()
        if url != self._compute_bridge_stored_url():
            self.env["ir.config_parameter"].sudo().set_param(BROKER_URL_PARAM, url or False)

    def action_compute_bridge_test_connection(self):
        """Settings' "Test connection": a real 1 + 1 through the broker and the compute service.

        Uses the values on screen, saved or not, so a URL can be tried before it is saved; the
        masked password on screen stands for the saved one (never for another user or host),
        and the environment variable still wins, as it does for every call.
        """
        self.ensure_one()
        if not self._compute_bridge_is_manager():
            raise AccessError(self.env._("Only Compute Bridge managers can test the connection."))
        on_screen = {
            BROKER_URL_PARAM: self._compute_bridge_submitted_url(),
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

    @api.model
    def _compute_bridge_is_manager(self):
        return self.env.is_superuser() or self.env.user.has_group(MANAGER_GROUP)

    @api.model
    def _compute_bridge_stored_url(self):
        """The URL calls use when the environment does not override it (see read_config)."""
        ICP = self.env["ir.config_parameter"].sudo()
        return (ICP.get_param(BROKER_URL_PARAM) or "").strip() or DEFAULT_BROKER_URL

    def _compute_bridge_submitted_url(self):
        """The URL on screen, stripped, its masked password replaced by the saved one."""
        self.ensure_one()
        try:
            return unmask_url((self.compute_bridge_broker_url or "").strip(),
                              self._compute_bridge_stored_url())
        except MaskedPassword as error:
            raise UserError(self.env._(
                "The broker URL's password is shown as %s: type it again when you change "
                "the URL's user, host or port.", MASK)) from error

    def _compute_bridge_test_notification(self, title, message, kind):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {"title": title, "message": message, "type": kind,
                       "sticky": kind != "success"},
        }

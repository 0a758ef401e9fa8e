"""The bridge's own settings, for its managers.

Odoo's Settings page is for administrators: saving it writes every application's settings at
once. This small wizard writes the two compute_bridge parameters and nothing else, so that
Compute Bridge managers can configure the bridge without being administrators.
"""

import os

from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, RPC_TIMEOUT_PARAM, mask_url, read_config
from ..rpc.config import MASK, MaskedPassword, unmask_url


class ComputeBridgeConfig(models.TransientModel):
    _name = "compute.bridge.config"
    _description = "Compute Bridge Broker Settings"

    broker_url = fields.Char(
        string="Broker URL",
        required=True,
        default=lambda self: self._default_broker_url(),
        help="RabbitMQ URL the Nameko services listen on. The saved password is shown as %s: "
        "leave it so to keep it." % MASK,
    )
    rpc_timeout = fields.Float(
        string="RPC Timeout (s)",
        required=True,
        default=lambda self: self._current_config().timeout,
        help="Seconds to wait for a service's reply before the operation is marked failed.",
    )
    broker_url_from_env = fields.Boolean(
        string="Broker URL Set by the Environment",
        default=lambda self: bool((os.environ.get(BROKER_URL_ENV_VAR) or "").strip()),
        readonly=True,
        help="%s is set in the Odoo server's environment: it wins over the URL above."
        % BROKER_URL_ENV_VAR,
    )

    @api.model
    def _current_config(self):
        # the stored parameters only: what the environment overrides is shown apart
        return read_config(self.env["ir.config_parameter"].sudo().get_param, {})

    @api.model
    def _default_broker_url(self):
        return mask_url(self._current_config().broker_url)

    def action_save(self):
        """Write the broker URL and the timeout; a masked password keeps the saved one."""
        self.ensure_one()
        if not self.env["res.config.settings"]._compute_bridge_is_manager():
            raise AccessError(self.env._("Only Compute Bridge managers can change its settings."))
        if not self.rpc_timeout > 0:
            raise ValidationError(self.env._("The RPC timeout must be a positive number."))
        try:
            url = unmask_url(self.broker_url.strip(), self._current_config().broker_url)
        except MaskedPassword as error:
            raise UserError(self.env._(
                "The broker URL's password is shown as %s: type it again when you change "
                "the URL's user, host or port.", MASK)) from error
        ICP = self.env["ir.config_parameter"].sudo()
        ICP.set_param(BROKER_URL_PARAM, url)
        ICP.set_param(RPC_TIMEOUT_PARAM, self.rpc_timeout)
        return {"type": "ir.actions.act_window_close"}

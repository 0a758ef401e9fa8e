import os

from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..rpc import (
    BROKER_URL_ENV_VAR,
    BROKER_URL_PARAM,
    RPC_TIMEOUT_PARAM,
    BridgeError,
    mask_url,
    read_config,
)
from ..rpc.background import (
    ALLOWED_METHODS_PARAM,
    DEFAULT_ALLOWED_METHODS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION_DAYS,
    MAX_ATTEMPTS_PARAM,
    RETENTION_DAYS_PARAM,
    invalid_method_names,
)
from ..rpc.config import (
    DEFAULT_RPC_TIMEOUT,
    MASK,
    InvalidSetting,
    MaskedPassword,
    check_broker_url,
    check_rpc_timeout,
    unmask_url,
)
from ..rpc.probe import probe_compute
from .compute_bridge_call import MAX_RETENTION_DAYS


class ResConfigSettings(models.TransientModel):
    """The bridge's block of Odoo's Settings page, for administrators (base.group_system):
    saving Settings writes every application's parameters at once."""

    _inherit = "res.config.settings"

    # Not a config_parameter field, so that the password is never read back: get_values() shows
    # the URL masked, set_values() saves it.
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
    compute_bridge_allowed_methods = fields.Char(
        string="Allowed Methods",
        config_parameter=ALLOWED_METHODS_PARAM,
        default=DEFAULT_ALLOWED_METHODS,
        help="The service.method names that may be called through the bridge, separated by "
        "commas or spaces; left empty, %s." % DEFAULT_ALLOWED_METHODS,
    )
    compute_bridge_max_attempts = fields.Integer(
        string="Background Attempts",
        config_parameter=MAX_ATTEMPTS_PARAM,
        default=DEFAULT_MAX_ATTEMPTS,
        help="Times a background call that gets no answer in time is sent before it is marked "
        "failed (a broker or service away puts it back in the queue without counting).",
    )
    compute_bridge_call_retention_days = fields.Integer(
        string="Keep Background Calls (days)",
        config_parameter=RETENTION_DAYS_PARAM,
        default=DEFAULT_RETENTION_DAYS,
        help="Ended background calls (done, failed, cancelled) older than this are deleted "
        "every day.",
    )
    compute_bridge_broker_url_from_env = fields.Boolean(
        string="Broker URL Set by the Environment",
        compute="_compute_compute_bridge_broker_url_from_env",
    )

    @api.depends("compute_bridge_broker_url")
    def _compute_compute_bridge_broker_url_from_env(self):
        from_env = self._compute_bridge_read_config(os.environ).broker_url_from_env
        for settings in self:
            settings.compute_bridge_broker_url_from_env = from_env

    # Odoo's default_get() reads every config_parameter field with sudo() and, like get_values()
    # and onchange(), checks no access right: without these checks any user, portal included,
    # could read the parameters of every application over RPC.
    @api.model
    def default_get(self, fields):
        self.browse().check_access("read")
        return super().default_get(fields)

    def onchange(self, values, field_names, fields_spec):
        self.browse().check_access("read")
        return super().onchange(values, field_names, fields_spec)

    def get_values(self):
        """The timeout calls use (a value stored before the rule shows as the default it
        stands for), and the broker URL with its password masked, for administrators only
        (another application may give its own users access to Settings)."""
        self.browse().check_access("read")
        values = super().get_values()
        config = self._compute_bridge_read_config({})
        values["compute_bridge_rpc_timeout"] = config.timeout
        values["compute_bridge_broker_url"] = (
            mask_url(config.broker_url) if self.env.is_system() else False
        )
        return values

    def set_values(self):
        """Save the broker URL (administrators only); a masked password keeps the saved one.
        ir.config_parameter refuses a URL kombu cannot use."""
        self._compute_bridge_check_background_settings()
        super().set_values()
        if not self.env.is_system():
            return
        url = self._compute_bridge_submitted_url()
        if url != self._compute_bridge_read_config({}).broker_url:
            self.env["ir.config_parameter"].sudo().set_param(BROKER_URL_PARAM, url or False)

    def action_compute_bridge_test_connection(self):
        """Settings' "Test connection": a real 1 + 1 through the broker and the compute service.

        Tests the values on screen, saved or not (the button skips the web client's "save
        first?" dialog), so a URL can be tried before it is saved; the masked password on screen
        stands for the saved one (never for another user or host). A success is never reported
        for another URL than the one on screen: when the environment variable overrides it, the
        notification says so.
        """
        self.ensure_one()
        if not self.env.is_system():
            raise AccessError(self.env._("Only administrators can test the connection."))
        on_screen = {
            BROKER_URL_PARAM: self._compute_bridge_submitted_url(),
            # 0 or empty is saved as "unset", which means the default
            RPC_TIMEOUT_PARAM: self.compute_bridge_rpc_timeout or DEFAULT_RPC_TIMEOUT,
        }
        config = read_config(on_screen.get, {})
        try:
            check_broker_url(config.broker_url)
            check_rpc_timeout(on_screen[RPC_TIMEOUT_PARAM])
        except InvalidSetting as error:  # the title leaves out a URL that may be 100 kB long
            reason = self.env["ir.config_parameter"]._compute_bridge_reason(error)
            return self._compute_bridge_test_notification(
                self.env._("Test connection"), reason, "danger")
        title = self.env._("Test connection: %s", mask_url(config.broker_url))
        try:
            probe = probe_compute(config)
        except BridgeError as error:  # worded as on the records, in the user's language
            message = self.env["compute.bridge"]._bridge_error_message(error)
            return self._compute_bridge_test_notification(title, message, "danger")
        if self.compute_bridge_broker_url_from_env:
            message = self.env._(
                "Broker and compute service reachable with this URL, but operations use %s, "
                "set in the server environment, instead.", BROKER_URL_ENV_VAR)
            return self._compute_bridge_test_notification(title, message, "warning")
        message = self.env._(
            "Broker and compute service reachable: %(a)s + %(b)s = %(result)s in %(ms).1f ms",
            a=probe.operands[0], b=probe.operands[1], result=probe.result, ms=probe.round_trip_ms,
        )
        return self._compute_bridge_test_notification(title, message, "success")

    def _compute_bridge_check_background_settings(self):
        for settings in self:
            invalid = invalid_method_names(settings.compute_bridge_allowed_methods)
            if invalid:
                raise ValidationError(self.env._(
                    "Allowed Methods: %(names)s is not a service.method name.",
                    names=", ".join(invalid)))
            if settings.compute_bridge_max_attempts < 1 or (
                    settings.compute_bridge_call_retention_days < 1):
                raise ValidationError(self.env._(
                    "Background Attempts and Keep Background Calls must be at least 1."))
            if settings.compute_bridge_call_retention_days > MAX_RETENTION_DAYS:
                raise ValidationError(self.env._(
                    "Keep Background Calls: at most %(days)s days.", days=MAX_RETENTION_DAYS))

    @api.model
    def _compute_bridge_read_config(self, environ):
        return read_config(self.env["ir.config_parameter"].sudo().get_param, environ)

    def _compute_bridge_submitted_url(self):
        """The URL on screen, stripped, its masked password replaced by the saved one."""
        self.ensure_one()
        try:
            return unmask_url((self.compute_bridge_broker_url or "").strip(),
                              self._compute_bridge_read_config({}).broker_url)
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

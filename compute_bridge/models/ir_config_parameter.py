from odoo import api, models
from odoo.exceptions import ValidationError

from ..rpc import BROKER_URL_PARAM, RPC_TIMEOUT_PARAM
from ..rpc.config import InvalidSetting, check_broker_url, check_rpc_timeout

CHECKS = {BROKER_URL_PARAM: check_broker_url, RPC_TIMEOUT_PARAM: check_rpc_timeout}


class IrConfigParameter(models.Model):
    _inherit = "ir.config_parameter"

    @api.constrains("key", "value")
    def _check_compute_bridge_value(self):
        """The bridge's two parameters are checked where they are stored: Settings, the System
        Parameters list and XML-RPC all meet one rule, and calls never read a value they
        cannot use (an unset parameter is removed, not stored, and means the default)."""
        for param in self:
            check = CHECKS.get(param.key)
            if check is None:
                continue
            try:
                check(param.value)
            except InvalidSetting as error:
                raise ValidationError(self._compute_bridge_reason(error)) from error

    @api.model
    def _compute_bridge_reason(self, error):
        """``error`` (an :class:`~..rpc.config.InvalidSetting`) in the user's language."""
        reasons = {
            "empty": lambda: self.env._("The broker URL is empty."),
            "too_long": lambda limit: self.env._(
                "The broker URL is longer than %(limit)s characters.", limit=limit),
            "space": lambda: self.env._("The broker URL contains a space or a control character."),
            "failover_empty": lambda sep: self.env._(
                "The broker URL's failover list (URLs separated by \"%(sep)s\") has an empty "
                "entry.", sep=sep),
            "no_scheme": lambda: self.env._(
                "The broker URL has no scheme: write it as "
                "pyamqp://user:password@host:5672/vhost."),
            "scheme": lambda scheme, schemes: self.env._(
                "The broker URL's scheme \"%(scheme)s\" is not an AMQP one: use one of "
                "%(schemes)s.",
                scheme=scheme, schemes=schemes),
            "syntax": lambda: self.env._("The broker URL cannot be read as a URL."),
            "userinfo": lambda: self.env._(
                "The broker URL's user or password holds / ? or # unencoded: "
                "percent-encode them."),
            "port": lambda low, high: self.env._(
                "The broker URL's port must be a whole number from %(low)s to %(high)s.",
                low=low, high=high),
            "host": lambda: self.env._("The broker URL names no host."),
            "host_invalid": lambda: self.env._("The broker URL's host name is not valid."),
            "vhost": lambda length, limit: self.env._(
                "The broker URL's virtual host is %(length)s bytes long; AMQP allows at most "
                "%(limit)s.", length=length, limit=limit),
            "rpc_timeout": lambda low, high: self.env._(
                "The RPC timeout must be a number of seconds from %(low)s to %(high)s.",
                low="%g" % low, high="%g" % high),
        }
        return reasons[error.code](**error.params)

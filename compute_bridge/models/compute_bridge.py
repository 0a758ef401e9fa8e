"""The bridge's Python API for any addon: call a Nameko service now, or in the background.

    self.env["compute.bridge"].sudo().call("compute", "method", 1, 2)          # -> 3
    self.env["compute.bridge"].sudo().call_later(
        "compute", "method", args=(1, 2), record=operation, callback="_on_background_sum")

Who may call what: ``sudo()`` code (an addon that checked its own users' rights) or a member of
"Call Any Service" may call, and only the ``service.method`` names listed in Settings
(Allowed Methods) can be called at all, by anyone.
"""

import logging
import os
import uuid

from odoo import api, models
from odoo.exceptions import AccessError, UserError, ValidationError

from .. import rpc, telemetry
from ..rpc.background import (
    ALLOWED_METHODS_PARAM,
    DEFAULT_ALLOWED_METHODS,
    dumps_arguments,
    parse_allowed_methods,
)
from .compute_bridge_call import RUNNER_CRONS

_logger = logging.getLogger(__name__)

ANY_SERVICE_GROUP = "compute_bridge.group_compute_bridge_any_service"
# precommit.data key: the runner's trigger created in the current transaction
TRIGGER_KEY = "compute_bridge.runner_trigger"


class ComputeBridge(models.AbstractModel):
    _name = "compute.bridge"
    _description = "Compute Bridge API"

    @api.model
    def call(self, service, method, *args, **kwargs):
        """``service.method(*args, **kwargs)`` now, through the broker: its result, or a
        ``BridgeError`` (the rpc package's) when there is none. The caller's worker waits for
        the reply, at most the RPC timeout of Settings."""
        outcome = self._call_many(service, method, [args], [kwargs])[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    @api.model
    def _call_many(self, service, method, args_list, kwargs_list=None, **options):
        """:func:`..rpc.call_many` after the access checks: one ``CallOutcome`` per request;
        raises a ``BridgeError`` when the whole batch failed (broker or service away).
        ``options``: call_many's ``resend``, ``require_consumer`` and ``headers_list``."""
        self._check_call_allowed(service, method)
        return rpc.call_many(self._config(), service, method, args_list, kwargs_list,
                             **options)

    @api.model
    @api.returns("compute.bridge.call", lambda call: call.id)  # RPC clients get the call's id
    def call_later(self, service, method, args=(), kwargs=None, record=None, callback=None,
                   batch=None):
        """Queue ``service.method(*args, **kwargs)``; it is sent once this transaction has
        committed (nothing is sent if it rolls back), by the runner cron, and retried as
        Settings say. Return the ``compute.bridge.call`` record (its id over XML-RPC and
        JSON-RPC).

        ``record`` (a recordset of one, from Python only: remote callers cannot pass one) and
        ``callback`` (the name of one of its methods) are called with the call record once the
        call has ended (done, failed or cancelled), in the transaction that stores its result.
        ``batch`` groups calls whose end the queuing user is told of at once (default: alone).
        """
        vals = self._call_vals(service, method, args, kwargs, record, callback)
        vals["batch"] = batch or uuid.uuid4().hex
        return self._queue([vals])

    @api.model
    def _call_vals(self, service, method, args, kwargs, record, callback):
        """The compute.bridge.call values for one call, after every check."""
        self._check_call_allowed(service, method)
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs or {}, dict):
            raise ValidationError(self.env._(
                "Arguments of %(method)s: args must be a list and kwargs a dictionary.",
                method="%s.%s" % (service, method)))
        try:
            args_json = dumps_arguments(list(args))
            kwargs_json = dumps_arguments(kwargs or {})
        except (TypeError, ValueError) as error:
            raise ValidationError(self.env._(
                "Arguments of %(method)s cannot be stored as JSON: %(detail)s",
                method="%s.%s" % (service, method), detail=error)) from error
        vals = {"service": service, "method": method, "args_json": args_json,
                "kwargs_json": kwargs_json, "user_id": self.env.uid,
                "traceparent": telemetry.current_traceparent()}
        if record is not None or callback:
            vals.update(self._callback_vals(record, callback))
        return vals

    @api.model
    def _callback_vals(self, record, callback):
        if not isinstance(record, models.BaseModel) or len(record) != 1:
            raise ValidationError(self.env._(
                "A background call's record must be one record, passed from Python code."))
        if not callback or not callable(getattr(record, callback, None)):
            raise ValidationError(self.env._(
                "%(model)s has no method %(callback)s to receive the result.",
                model=record._name, callback=callback or ""))
        return {"res_model": record._name, "res_id": record.id, "callback": callback}

    @api.model
    def _queue(self, vals_list):
        """Create the calls of ``vals_list`` and wake the runner when this transaction
        commits: the trigger row belongs to this transaction, so a rollback removes it with
        the calls. One runner job is woken (each wake-up costs a connection to PostgreSQL's
        own database for its NOTIFY); the runner wakes the other ones while calls remain."""
        call_model = self.env["compute.bridge.call"]
        calls = call_model.sudo().create(vals_list)
        data = self.env.cr.precommit.data
        trigger = data.get(TRIGGER_KEY)
        if trigger is None or not trigger.exists():  # gone with a rolled-back savepoint
            data[TRIGGER_KEY] = call_model._wake_runners(crons=RUNNER_CRONS[:1])
        return calls

    @api.model
    def _check_call_allowed(self, service, method):
        """Raise unless ``service.method`` may be called here: by sudo() code or a member of
        Call Any Service, and listed in Settings' Allowed Methods (everyone, sudo included)."""
        name = "%s.%s" % (service, method)
        if not self.env.su and not self.env.user.has_group(ANY_SERVICE_GROUP):
            group = self.env.ref(ANY_SERVICE_GROUP).sudo()
            raise AccessError(self.env._(
                "You may not call %(method)s: only members of the group %(group)s call "
                "services directly.", method=name, group=group.full_name))
        if name not in self._allowed_methods():
            raise UserError(self._not_allowed_message(name))

    @api.model
    def _not_allowed_message(self, name):
        return self.env._(
            "%(method)s is not in the Allowed Methods of the Compute Bridge settings: "
            "an administrator may add it there.", method=name)

    @api.model
    def _allowed_methods(self):
        # An unset parameter is the default: Settings deletes it when the field is cleared.
        return parse_allowed_methods(self.env["ir.config_parameter"].sudo().get_param(
            ALLOWED_METHODS_PARAM, DEFAULT_ALLOWED_METHODS))

    @api.model
    def _config(self):
        return rpc.read_config(self.env["ir.config_parameter"].sudo().get_param, os.environ)

    @api.model
    def _bridge_error_message(self, error):
        """``error`` (an rpc BridgeError) told in the user's language, from its ``params``.

        Its ``str()`` is English, fit for logs; this is what users read. Most specific class
        first: InvalidBrokerUrl is a BrokerUnreachable.
        """
        params = error.params
        if isinstance(error, rpc.InvalidBrokerUrl):
            return self.env._("The message broker URL %(broker)s is not valid: %(detail)s.",
                              broker=params["broker"], detail=params["detail"])
        if isinstance(error, rpc.BrokerUnreachable):
            return self.env._("Cannot reach the message broker at %(broker)s (%(detail)s).",
                              broker=params["broker"], detail=params["detail"])
        if isinstance(error, rpc.ServiceUnavailable):
            return self.env._(
                "The service %(service)s is not running: the broker at %(broker)s has no queue "
                "for it.", service=params["service"], broker=params["broker"])
        if isinstance(error, rpc.RequestsNotAccepted):
            return self.env._(
                "No reply from %(service)s.%(method)s within %(timeout)s s: the broker at "
                "%(broker)s did not accept the requests (is its queue without enough cluster "
                "nodes?).",
                service=params["service"], method=params["method"],
                timeout="%g" % params["timeout"], broker=params["broker"])
        if isinstance(error, rpc.ServiceTimeout):
            return self.env._(
                "No reply from %(service)s.%(method)s within %(timeout)s s (broker %(broker)s): "
                "the service is busy or not consuming its queue.",
                service=params["service"], method=params["method"],
                timeout="%g" % params["timeout"], broker=params["broker"])
        if isinstance(error, rpc.InvalidOperands):
            return self.env._("%(service)s.%(method)s refused the operands: %(detail)s",
                              service=params["service"], method=params["method"],
                              detail=params["detail"])
        if isinstance(error, rpc.RemoteFailure):
            return self.env._("%(service)s.%(method)s failed with %(exc_type)s: %(detail)s",
                              service=params["service"], method=params["method"],
                              exc_type=params["exc_type"], detail=params["detail"])
        return str(error)

from odoo import models
from odoo.http import request

from .. import telemetry


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _dispatch(cls, endpoint):
        # One span per dispatched request, so that the services' log lines of a click and
        # Odoo's own carry one trace id (compute_bridge/telemetry.py).
        if telemetry.tracer() is None:
            return super()._dispatch(endpoint)
        httprequest = request.httprequest
        with telemetry.request_span("%s %s" % (httprequest.method, httprequest.path),
                                    httprequest.headers):
            return super()._dispatch(endpoint)

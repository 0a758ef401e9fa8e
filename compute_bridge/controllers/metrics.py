"""``GET /compute_bridge/metrics``: the bridge's metrics in Prometheus' text format.

Answered only to ``Authorization: Bearer <token>``, the token being the environment variable
``COMPUTE_BRIDGE_METRICS_TOKEN``, else the content of the file ``COMPUTE_BRIDGE_METRICS_TOKEN_FILE``
names (a Docker secret), else the system parameter ``compute_bridge.metrics_token``,
compared in constant time; the scheme is case-insensitive (RFC 7235). No token configured: 404
to every method, as if the route did not exist; a missing or wrong token: 403 with an empty body;
the right token with another method than GET: 405. The figures are those of every process of
this server (compute_bridge/telemetry.py), plus gauges read from the database at each scrape.
"""

import hmac
import logging
import os

from odoo import http
from odoo.http import request

from .. import telemetry

_logger = logging.getLogger(__name__)

ROUTE = "/compute_bridge/metrics"
TOKEN_ENV_VAR = "COMPUTE_BRIDGE_METRICS_TOKEN"
TOKEN_FILE_ENV_VAR = TOKEN_ENV_VAR + "_FILE"
TOKEN_PARAM = "compute_bridge.metrics_token"
BEARER_SCHEME = "bearer"  # compared lowercased
SCRAPE_METHODS = ("GET", "HEAD")


def metrics_token(get_param, environ):
    """The token a scrape must carry: the environment variable, else the file it names with
    ``_FILE``, else the system parameter; "" when none is set.

    >>> metrics_token({TOKEN_PARAM: "db"}.get, {TOKEN_ENV_VAR: "env"})
    'env'
    >>> metrics_token({}.get, {})
    ''
    """
    token = (environ.get(TOKEN_ENV_VAR) or "").strip()
    if not token and environ.get(TOKEN_FILE_ENV_VAR):
        token = read_token_file(environ[TOKEN_FILE_ENV_VAR])
    return token or (get_param(TOKEN_PARAM) or "").strip()


def read_token_file(path):
    """The token in the file ``path``; "" (with a warning) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        _logger.warning("%s=%s cannot be read: %s", TOKEN_FILE_ENV_VAR, path, error)
        return ""


def bearer_token(authorization):
    """The credentials of an ``Authorization: Bearer <token>`` header, "" for any other.

    >>> bearer_token("bearer abc"), bearer_token("Basic abc"), bearer_token("abc")
    ('abc', '', '')
    """
    scheme, _space, credentials = (authorization or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == BEARER_SCHEME else ""


class MetricsController(http.Controller):

    # every method reaches the handler: a 405 would tell a caller without a token that the route
    # exists
    @http.route(ROUTE, type="http", auth="none", csrf=False, save_session=False)
    def metrics(self, **_query):
        if telemetry.metrics is None:  # COMPUTE_BRIDGE_METRICS=0
            return request.not_found()
        expected = metrics_token(request.env["ir.config_parameter"].sudo().get_param, os.environ)
        if not expected:
            return request.not_found()
        given = bearer_token(request.httprequest.headers.get("Authorization"))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            _logger.warning("metrics scrape refused from %s: missing or wrong token",
                            request.httprequest.remote_addr)
            return request.make_response("", status=403)
        if request.httprequest.method not in SCRAPE_METHODS:
            return request.make_response("", status=405, headers=[
                ("Allow", ", ".join(SCRAPE_METHODS))])
        from prometheus_client import CONTENT_TYPE_LATEST

        body = telemetry.exposition(request.env)
        return request.make_response(body, headers=[("Content-Type", CONTENT_TYPE_LATEST)])

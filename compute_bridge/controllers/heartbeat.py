"""``POST /compute_bridge/heartbeat``: where every Nameko service instance says it is alive.

Which database: the route is ``auth="none"`` and the services send no session, so Odoo picks the
database by its own rules, before this code runs: the only database, or the one ``dbfilter``
(or ``--database``) leaves. ``make run`` serves one database with ``dbfilter = ^<db>$``. With
several databases, point each service at a host name the ``dbfilter`` maps to one database.
A ``?db=<name>`` query parameter in HEARTBEAT_URL is checked against the database Odoo picked,
so a beat meant for another database is refused (409) rather than written to the wrong one.

Answers: 200 ``{"status": "ok"}`` (or ``"superseded"`` when a concurrent beat of the same
instance holds the row); 429 for a new instance while the table is full of live ones
(``MAX_INSTANCES`` in models/compute_service_instance.py); 403 with an empty body when the
secret is missing or wrong (nothing is said about why, nor is the body read); 411 without a
Content-Length; 413 when the body is larger than ``heartbeats.MAX_BODY_BYTES``; 400 with a
readable reason when the body is not a heartbeat.
"""

import hmac
import json
import logging

from odoo import http
from odoo.http import request

from .. import heartbeats
from ..models.compute_service_instance import TooManyInstances

_logger = logging.getLogger(__name__)

ROUTE = "/compute_bridge/heartbeat"


class HeartbeatController(http.Controller):

    # readonly=False: an auth="none" route starts on a read-only cursor by default, and every
    # beat writes (the insert or update would fail there and be retried on a read/write one).
    @http.route(ROUTE, type="http", auth="none", methods=["POST"], csrf=False, save_session=False,
                readonly=False)
    def heartbeat(self, **_query):
        instances = request.env["compute.service.instance"].sudo()
        expected = instances._heartbeat_secret()
        given = request.httprequest.headers.get(heartbeats.SECRET_HEADER, "")
        # compare_digest: the answer time must not tell how much of a guessed secret is right.
        # An unset secret refuses everything rather than accepting everything.
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            _logger.warning(
                "heartbeat refused from %s: missing or wrong secret",
                request.httprequest.remote_addr,
            )
            return request.make_response("", status=403)

        wanted_db = request.httprequest.args.get("db")
        if wanted_db and wanted_db != request.db:
            return _json_response(
                {"error": "this server answers for database %r, not %r" % (request.db, wanted_db)},
                status=409,
            )

        # Demanding Content-Length bounds the read: werkzeug reads exactly that many bytes, and a
        # chunked body (no length) could otherwise run up to Odoo's 128 MB request limit.
        length = request.httprequest.content_length
        if length is None:
            return _json_response({"error": "Content-Length is required"}, status=411)
        if length > heartbeats.MAX_BODY_BYTES:
            return _json_response(
                {"error": "body is larger than %d bytes" % heartbeats.MAX_BODY_BYTES}, status=413
            )
        raw = request.httprequest.get_data()
        try:
            beat = heartbeats.parse_heartbeat(raw)
        except heartbeats.HeartbeatError as error:
            _logger.warning("malformed heartbeat refused: %s", error)
            return _json_response({"error": str(error)}, status=400)

        try:
            recorded = instances._record_heartbeat(beat)
        except TooManyInstances as error:
            _logger.warning("heartbeat of new instance %r refused: %s", beat["instance_id"], error)
            return _json_response({"error": str(error)}, status=429)
        # "superseded": another beat of this instance was being written at the same moment
        return _json_response({"status": "ok" if recorded else "superseded"})


def _json_response(body, status=200):
    return request.make_response(
        json.dumps(body), headers=[("Content-Type", "application/json")], status=status
    )

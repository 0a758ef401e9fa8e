import logging
import os
import secrets

from odoo import api, fields, models
from odoo.tools import SQL

from .. import heartbeats

_logger = logging.getLogger(__name__)

# Rows of instances silent for this long are deleted by the daily cron: every `nameko run`
# start is a new instance id, so without a purge the list grows with each restart.
PURGE_AFTER_DAYS = 7
SECRET_BYTES = 32  # secrets.token_urlsafe(32): 43 characters


class ComputeServiceInstance(models.Model):
    _name = "compute.service.instance"
    _description = "Compute Service Instance"
    _order = "last_beat desc, id desc"
    _rec_name = "instance_id"

    instance_id = fields.Char(
        string="Instance ID",
        required=True,
        readonly=True,
        index=True,
        help="Unique per `nameko run` process; a restart is a new instance.",
    )
    service = fields.Char(readonly=True, help="The service that sent the heartbeat.")
    host = fields.Char(readonly=True)
    pid = fields.Integer(string="PID", readonly=True)
    uptime = fields.Float(string="Uptime (s)", readonly=True, digits=(16, 1))
    calls_served = fields.Integer(readonly=True, help="Compute calls this process has answered.")
    interval = fields.Float(
        string="Interval (s)",
        readonly=True,
        help="Seconds between two heartbeats of this instance, as it reported.",
    )
    last_beat = fields.Datetime(readonly=True, help="When Odoo received the last heartbeat.")
    payload = fields.Text(readonly=True, help="The last heartbeat as received (JSON).")
    state = fields.Selection(
        selection=[("live", "Live"), ("stale", "Stale")],
        compute="_compute_state",
        search="_search_state",
        help="Stale once three heartbeat intervals have passed without a beat.",
    )

    _sql_constraints = [
        ("instance_id_unique", "UNIQUE(instance_id)", "A service instance is listed once."),
    ]

    # Not stored: staleness depends on the clock, not on a write to the row.
    @api.depends("last_beat", "interval")
    def _compute_state(self):
        now = fields.Datetime.now()
        for instance in self:
            stale = heartbeats.is_stale(instance.last_beat, instance.interval, now)
            instance.state = "stale" if stale else "live"

    def _search_state(self, operator, value):
        if operator not in ("=", "!=", "in", "not in"):
            return NotImplemented
        wanted = {value} if isinstance(value, str) else set(value or ())
        if operator in ("!=", "not in"):
            wanted = {"live", "stale"} - wanted
        if wanted >= {"live", "stale"}:
            return []
        if not wanted:
            return [(0, "=", 1)]
        # Each row has its own interval, so the cutoff is computed per row in SQL (the column is
        # quoted: INTERVAL is also a PostgreSQL type keyword).
        self.env.cr.execute(SQL(
            """SELECT id FROM compute_service_instance
                WHERE last_beat IS NULL
                   OR last_beat < %s - make_interval(
                        secs => %s * CASE WHEN "interval" > 0 THEN "interval" ELSE %s END)""",
            fields.Datetime.now(), heartbeats.STALE_AFTER_MISSED_BEATS, heartbeats.DEFAULT_INTERVAL,
        ))
        stale_ids = [row[0] for row in self.env.cr.fetchall()]
        return [("id", "in" if wanted == {"stale"} else "not in", stale_ids)]

    @api.model
    def _record_heartbeat(self, beat):
        """Create or update the row of ``beat``'s instance (a dict from heartbeats.parse_heartbeat).

        Returns the row, or an empty recordset when the beat was dropped because another beat
        of the same instance is being written right now. That happens when Odoo was busy
        (starting, updating) and the beats the services gave up on are all served at once:
        the newest one wins, and the others must not fail on the row lock.
        """
        values = dict(beat, last_beat=fields.Datetime.now())
        instance = self.search([("instance_id", "=", beat["instance_id"])], limit=1)
        if not instance:
            instance = self.create(values)
            _logger.info(
                "new %s instance %s on %s (pid %s)",
                beat["service"], beat["instance_id"], beat["host"], beat["pid"],
            )
            return instance
        # log_exceptions=False: a row updated since this transaction began raises a
        # serialization failure, which Odoo retries on its own; it is not an error to log.
        self.env.cr.execute(
            SQL("SELECT id FROM compute_service_instance WHERE id = %s"
                " FOR NO KEY UPDATE SKIP LOCKED", instance.id),
            log_exceptions=False,
        )
        if not self.env.cr.fetchone():
            _logger.debug("heartbeat of %s dropped: another one is being written", instance.id)
            return self.browse()
        instance.write(values)
        return instance

    @api.model
    def _heartbeat_secret(self):
        return heartbeats.heartbeat_secret(self.env["ir.config_parameter"].sudo().get_param, os.environ)

    @api.model
    def _init_heartbeat_secret(self):
        """Called once at install (data file): give the database its own secret, keep any set."""
        params = self.env["ir.config_parameter"].sudo()
        if not params.get_param(heartbeats.SECRET_PARAM):
            params.set_param(heartbeats.SECRET_PARAM, secrets.token_urlsafe(SECRET_BYTES))

    @api.model
    def _gc_stale_instances(self):
        """Cron: forget instances that have been silent for PURGE_AFTER_DAYS."""
        cutoff = fields.Datetime.subtract(fields.Datetime.now(), days=PURGE_AFTER_DAYS)
        old = self.search([("last_beat", "<", cutoff)])
        if old:
            _logger.info("purging %d service instances silent since %s", len(old), cutoff)
            old.unlink()
        return len(old)

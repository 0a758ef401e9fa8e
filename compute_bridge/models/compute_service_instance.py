import logging
import os
import secrets

from odoo import api, fields, models
from odoo.osv import expression
from odoo.tools import SQL

from .. import heartbeats

_logger = logging.getLogger(__name__)

# Rows of instances silent for this long are deleted by the daily cron: every `nameko run`
# start is a new instance id, so without a purge the list grows with each restart.
PURGE_AFTER_DAYS = 7
# At most this many rows: a new instance beyond it first pushes out the longest-silent stale
# ones, and is refused while every row is live. A fleet is a few dozen processes; this bounds
# what a holder of the secret can make Odoo store by inventing instance ids.
MAX_INSTANCES = 1000
SECRET_BYTES = 32  # secrets.token_urlsafe(32): 43 characters


class TooManyInstances(Exception):
    """A new instance was refused: MAX_INSTANCES rows are live."""


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
    services = fields.Char(readonly=True, help="The services this `nameko run` process runs.")
    host = fields.Char(readonly=True)
    pid = fields.Integer(string="PID", readonly=True)
    uptime = fields.Float(string="Uptime (s)", readonly=True, digits=(16, 1))
    # A Float, not an Integer: a busy process passes 2**31 calls, the int4 column's limit, and
    # Odoo has no 64-bit integer field; a float holds every count up to MAX_CALLS_SERVED exactly.
    calls_served = fields.Float(
        readonly=True, digits=(16, 0), help="Compute calls this process has answered."
    )
    service_calls = fields.Char(
        string="Calls by service", readonly=True,
        help="Calls (workers run) of each service of this process since it started.")
    calls_per_minute = fields.Float(
        readonly=True, digits=(16, 1),
        help="Compute calls served per minute between its last two heartbeats, timed by the "
             "instance's own clock.")
    broker_state = fields.Selection(
        selection=[("connected", "Connected"), ("disconnected", "Disconnected")],
        readonly=True,
        help="The instance's connection to RabbitMQ, as its last heartbeat reported it "
             "(empty: the services do not report it).",
    )
    interval = fields.Float(
        string="Interval (s)",
        readonly=True,
        help="Seconds between two heartbeats of this instance, as it reported.",
    )
    last_beat = fields.Datetime(readonly=True, help="When Odoo received the last heartbeat.")
    payload = fields.Text(readonly=True, help="The last heartbeat as received (JSON).")
    state = fields.Selection(
        selection=[("live", "Live"), ("disconnected", "Broker lost"), ("stale", "Stale")],
        compute="_compute_state",
        search="_search_state",
        help="Stale once three heartbeat intervals have passed without a beat; Broker lost "
             "while it beats but has no connection to RabbitMQ, so it serves no call.",
    )

    _sql_constraints = [
        ("instance_id_unique", "UNIQUE(instance_id)", "A service instance is listed once."),
    ]

    # Not stored: staleness depends on the clock, not on a write to the row.
    @api.depends("last_beat", "interval", "broker_state")
    def _compute_state(self):
        now = fields.Datetime.now()
        for instance in self:
            if heartbeats.is_stale(instance.last_beat, instance.interval, now):
                instance.state = "stale"
            elif instance.broker_state == "disconnected":
                instance.state = "disconnected"
            else:
                instance.state = "live"

    def _search_state(self, operator, value):
        if operator not in ("=", "!=", "in", "not in"):
            return NotImplemented
        states = {state for state, _label in self._fields["state"].selection}
        wanted = {value} if isinstance(value, str) else set(value or ())
        if operator in ("!=", "not in"):
            wanted = states - wanted
        wanted &= states
        if wanted == states:
            return []
        stale_ids = self._stale_ids()
        domains = {
            "stale": [("id", "in", stale_ids)],
            "disconnected": [("id", "not in", stale_ids), ("broker_state", "=", "disconnected")],
            "live": [("id", "not in", stale_ids), ("broker_state", "in", ["connected", False])],
        }
        return expression.OR([domains[state] for state in sorted(wanted)])

    @api.model
    def _stale_ids(self):
        # Each row has its own interval, so the cutoff is computed per row in SQL, as
        # heartbeats.stale_after does (the column is quoted: INTERVAL is a type keyword).
        self.flush_model(["last_beat", "interval"])
        self.env.cr.execute(SQL(
            """SELECT id FROM compute_service_instance
                WHERE last_beat IS NULL
                   OR last_beat < %s - make_interval(secs => %s * LEAST(%s,
                        CASE WHEN "interval" > 0 THEN "interval" ELSE %s END))""",
            fields.Datetime.now(), heartbeats.STALE_AFTER_MISSED_BEATS, heartbeats.MAX_INTERVAL,
            heartbeats.DEFAULT_INTERVAL,
        ))
        return [row[0] for row in self.env.cr.fetchall()]

    @api.model
    def _record_heartbeat(self, beat):
        """Create or update the row of ``beat``'s instance (a dict from
        heartbeats.parse_heartbeat).

        Returns the row, or an empty recordset when the beat was dropped because another beat
        of the same instance is being written right now. That happens when Odoo was busy
        (starting, updating) and the beats the services gave up on are all served at once:
        the newest one wins, and the others must not fail on the row lock. Raises
        TooManyInstances for a new instance when MAX_INSTANCES rows are live.
        """
        values = dict(beat, last_beat=fields.Datetime.now())
        instance = self.search([("instance_id", "=", beat["instance_id"])], limit=1)
        if not instance:
            return self._insert_instance(values)
        values["calls_per_minute"] = heartbeats.calls_per_minute(
            instance.calls_served, instance.uptime, beat.get("calls_served", 0),
            beat.get("uptime", 0.0))
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
    def _insert_instance(self, values):
        """The first beat of an instance. ON CONFLICT instead of the ORM's create: when several
        first beats of one instance arrive together, the unique index makes the others wait for
        the first one's transaction and then fail with a serialization error, which Odoo retries
        (the retry finds the row), rather than with a duplicate key error answered as a 400."""
        self._make_room()
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL("""INSERT INTO compute_service_instance
                       (instance_id, create_uid, create_date, write_uid, write_date)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (instance_id) DO NOTHING RETURNING id""",
                values["instance_id"], self.env.uid, now, self.env.uid, now),
            log_exceptions=False,
        )
        row = self.env.cr.fetchone()
        if not row:  # inserted by a transaction this one can see: a concurrent first beat won
            return self.browse()
        instance = self.browse(row[0])
        instance.write(values)
        # the services it runs: "service" is the one that sends the beat (heartbeat)
        _logger.info(
            "new service instance %s on %s (pid %s) running %s",
            values["instance_id"], values["host"], values["pid"],
            values.get("services") or values["service"],
        )
        return instance

    @api.model
    def _make_room(self):
        """Keep the table under MAX_INSTANCES rows: delete the longest-silent stale rows, or
        raise TooManyInstances when every row is live."""
        excess = self.search_count([]) - MAX_INSTANCES + 1
        if excess <= 0:
            return
        stale = self.search([("state", "=", "stale")], order="last_beat asc, id asc",
                            limit=excess)
        if len(stale) < excess:
            raise TooManyInstances(
                "%d service instances are live: no room for another" % MAX_INSTANCES)
        _logger.info("%d stale service instances deleted to make room for a new one", len(stale))
        stale.unlink()

    @api.model
    def _heartbeat_secret(self):
        get_param = self.env["ir.config_parameter"].sudo().get_param
        return heartbeats.heartbeat_secret(get_param, os.environ)

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

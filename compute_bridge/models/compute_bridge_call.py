"""One background call (``compute.bridge.call``) and the cron that runs them.

Life of a call: ``queued`` (committed by the transaction that queued it, which also woke the
runner cron) → ``sent`` (claimed by one runner, committed before anything is published) →
``done`` or ``failed``, or back to ``queued`` for a retry; ``cancelled`` by hand.

Delivery is at least once: a runner that dies after the claim leaves the call ``sent``; once
its lease (the RPC timeout plus :data:`LEASE_GRACE`) has passed, another runner sends it again.
Application is exactly once: a runner stores an outcome only for a call still ``sent`` with the
attempt number it sent (the UPDATE's WHERE), and the callback runs for those rows only, in the
same transaction: a late runner, or a second Odoo server, finds the attempt changed and stores
nothing.
"""

import json
import logging
import os
import threading
import time
from datetime import timedelta

import psycopg2.errors

from odoo import SUPERUSER_ID, api, fields, models, sql_db
from odoo.exceptions import AccessError
from odoo.modules.registry import Registry
from odoo.service import server as odoo_server
from odoo.tools import SQL, config

from ..rpc import BridgeError
from ..rpc.background import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION_DAYS,
    DONE,
    FAIL,
    MAX_ATTEMPTS_PARAM,
    REQUEUE,
    REQUEUE_DELAY,
    RETENTION_DAYS_PARAM,
    RETRY,
    outcome_kind,
    positive_int,
    retry_delay,
)

_logger = logging.getLogger(__name__)

QUEUED, SENT, CALL_DONE, FAILED, CANCELLED = "queued", "sent", "done", "failed", "cancelled"
# Calls claimed and sent per run of the cron's action: one RPC deadline, one commit. The cron
# runs again at once while calls remain (ir.cron's progress API), so a long queue is drained in
# chunks, each committed, that two Odoo servers share.
CHUNK_SIZE = 200
# Seconds past the RPC timeout after which a ``sent`` call is taken as lost (its Odoo died
# between the claim and the commit of the outcome) and is sent again.
LEASE_GRACE = 30
# Times a transaction that met a concurrent update (another server, a user's edit) is replayed.
SERIALIZATION_RETRIES = 3
# A queued call not sent this long after its next try, or a sent one past its lease, is stuck.
STUCK_AFTER = timedelta(minutes=5)
MANAGER_GROUP = "compute_bridge.group_compute_bridge_manager"
RUNNER_CRON = "compute_bridge.ir_cron_compute_bridge_run_calls"
# Odoo runs one scheduled action in one process at a time (its ir_cron row stays locked while it
# runs): two runner jobs let two servers, or two cron threads of one, send chunks at the same
# time, the claim's SKIP LOCKED splitting the rows between them.
RUNNER_CRONS = (RUNNER_CRON, "compute_bridge.ir_cron_compute_bridge_run_calls_2")
# A retry due this soon is waited for in the runner's own cron thread: ir.cron acts on a trigger
# for a later time only when a cron thread next polls, up to a minute later.
RETRY_WAIT_IN_RUNNER = 15.0  # seconds
BUS_CALLS_ENDED = "compute_bridge.calls_ended"  # bus notification type, read by the JS service
# A server that starts may find calls queued while no server ran, and calls a killed one left
# sent: their wake-ups were sent while no cron thread listened, and a cron thread first looks
# for work at its first poll, up to a minute after it starts. The runner is woken once the
# server's cron threads listen (they start after the registries are loaded), and again when
# the oldest lease of a dead server's calls ends (if that is within LEASE_WAKE_HORIZON).
STARTUP_WAKE_DELAY = 5.0  # seconds
LEASE_WAKE_HORIZON = 3600.0  # seconds


class ComputeBridgeCall(models.Model):
    _name = "compute.bridge.call"
    _description = "Compute Bridge Background Call"
    _order = "id desc"
    _rec_name = "display_method"

    service = fields.Char(required=True, readonly=True)
    method = fields.Char(required=True, readonly=True)
    display_method = fields.Char(string="Call", compute="_compute_display_method")
    args_json = fields.Text(string="Arguments", readonly=True, default="[]")
    kwargs_json = fields.Text(string="Keyword Arguments", readonly=True, default="{}")
    state = fields.Selection(
        [(QUEUED, "Queued"), (SENT, "Sent"), (CALL_DONE, "Done"), (FAILED, "Failed"),
         (CANCELLED, "Cancelled")],
        default=QUEUED, required=True, readonly=True, index=True,
    )
    attempts = fields.Integer(readonly=True, default=0, help="Times the call was sent.")
    next_try = fields.Datetime(
        readonly=True, index=True, default=fields.Datetime.now,
        help="A queued call is not sent before this time.")
    sent_at = fields.Datetime(readonly=True)
    done_at = fields.Datetime(string="Ended At", readonly=True)
    duration = fields.Float(string="Duration (ms)", readonly=True, digits=(16, 1))
    result_json = fields.Text(string="Result", readonly=True)
    error_message = fields.Text(readonly=True, help="Why the last attempt failed.")
    res_model = fields.Char(string="Record Model", readonly=True)
    res_id = fields.Many2oneReference(string="Record ID", model_field="res_model", readonly=True)
    callback = fields.Char(readonly=True, help="Method of the record called when the call ends.")
    user_id = fields.Many2one("res.users", string="Queued By", readonly=True, index=True,
                              ondelete="set null")
    batch = fields.Char(readonly=True, index=True,
                        help="Calls queued together: their user is told when all have ended.")
    batch_notified = fields.Boolean(readonly=True, copy=False, default=False)
    is_stuck = fields.Boolean(
        string="Stuck", compute="_compute_is_stuck", search="_search_is_stuck",
        help="Queued and not sent long after its next try, or sent and never answered.")

    @api.depends("service", "method")
    def _compute_display_method(self):
        for call in self:
            call.display_method = "%s.%s" % (call.service, call.method)

    def _compute_is_stuck(self):
        stuck = self.filtered_domain(self._stuck_domain())
        for call in self:
            call.is_stuck = call in stuck

    def _search_is_stuck(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise NotImplementedError(operator)
        domain = self._stuck_domain()
        return domain if (operator == "=") == value else ["!", *domain]

    @api.model
    def _stuck_domain(self):
        before = fields.Datetime.now() - STUCK_AFTER
        return ["|", "&", ("state", "=", QUEUED), ("next_try", "<", before),
                "&", ("state", "=", SENT), ("sent_at", "<", before)]

    # --- what a callback reads ------------------------------------------------------------
    @property
    def result(self):
        """The service's result, decoded (None until done)."""
        self.ensure_one()
        return json.loads(self.result_json) if self.result_json else None

    # --- buttons --------------------------------------------------------------------------
    def action_requeue(self):
        """Send failed, cancelled or stuck calls again, as new: attempts start over."""
        self._check_manager()
        calls = self.filtered(lambda call: call.state in (FAILED, CANCELLED) or call.is_stuck)
        calls.sudo().write({"state": QUEUED, "attempts": 0, "next_try": fields.Datetime.now(),
                            "error_message": False, "batch_notified": False})
        calls._run_callbacks()
        if calls:
            self._wake_runners()
        return True

    def action_cancel(self):
        """Stop queued, sent or failed calls; a result that arrives later is not stored."""
        self._check_manager()
        calls = self.filtered(lambda call: call.state in (QUEUED, SENT, FAILED))
        calls.sudo().write({"state": CANCELLED, "done_at": fields.Datetime.now()})
        calls._run_callbacks()
        return True

    def _check_manager(self):
        """Requeue and Cancel are the managers' (no one writes calls by hand: their state is
        the runner's)."""
        self.check_access("read")
        if not self.env.su and not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._(
                "Only Compute Bridge managers can requeue or cancel background calls."))

    # --- waking the runner when a server starts --------------------------------------------
    def _register_hook(self):
        super()._register_hook()
        if config["stop_after_init"] or config["test_enable"] or not config["max_cron_threads"]:
            return
        server = odoo_server.server
        prefork = isinstance(server, odoo_server.PreforkServer)
        if prefork and os.getpid() != server.pid:
            return  # a worker loading the registry: the master woke the runner at its start
        _wake_later(self.env.cr.dbname, STARTUP_WAKE_DELAY, prefork)

    @api.model
    def _wake_for_waiting_calls(self):
        """Wake the runner if calls are due; return in how many seconds the oldest lease of
        the calls left ``sent`` ends (None: none)."""
        lease = timedelta(seconds=self.env["compute.bridge"]._config().timeout + LEASE_GRACE)
        due = self._count_due(lease)
        if due:
            _logger.info("compute.bridge.call: %d calls waiting as the server starts: "
                         "runner woken", due)
            self._wake_runners()
        self.env.cr.execute(SQL(
            "SELECT min(sent_at) FROM compute_bridge_call WHERE state = %s", SENT))
        oldest = self.env.cr.fetchone()[0]
        if oldest is None:
            return None
        return (oldest + lease - fields.Datetime.now()).total_seconds()

    # --- the runner (cron) ----------------------------------------------------------------
    @api.model
    def _cron_run_calls(self):
        """Claim, send and store one chunk of due calls; tell ir.cron how many remain, so that
        it runs this again at once (here or on another server) while some do."""
        bridge = self.env["compute.bridge"]
        config = bridge._config()
        lease = timedelta(seconds=config.timeout + LEASE_GRACE)
        claimed = self._claim(lease)
        if claimed:
            results = self._send(config, claimed)
            self._store(results)
            self._notify_ended_batches({result["batch"] for result in results})
            if all(result["kind"] == REQUEUE for result in results):
                # Nothing could be delivered (broker or service away): wait a little here,
                # since a cron trigger is only precise to the minute, then report the calls
                # due so the cron runs again and sends them as soon as the service is back.
                time.sleep(REQUEUE_DELAY)
        remaining = self._count_due(lease)
        waited = False
        if not remaining:
            wait = self._seconds_to_next_try()
            if wait is not None and wait <= RETRY_WAIT_IN_RUNNER:
                self._commit()
                time.sleep(max(wait, 0.0))
                waited = True
                remaining = self._count_due(lease)
        self.env["ir.cron"]._notify_progress(done=len(claimed), remaining=remaining)
        if (claimed or waited) and remaining:
            # ir.cron runs a partially done job again only when a cron thread wakes up
            # (a minute at most): a trigger for now wakes it as soon as this run commits.
            self._wake_runners()

    @api.model
    def _wake_runners(self, at=None, crons=RUNNER_CRONS):
        """Trigger the runner jobs ``crons`` (XML ids; all by default) now, or ``at``; return
        the triggers."""
        triggers = self.env["ir.cron.trigger"]
        for xmlid in crons:
            cron = self.env.ref(xmlid, raise_if_not_found=False)
            if cron:
                triggers |= cron.sudo()._trigger(at)
        return triggers

    @api.model
    def _seconds_to_next_try(self):
        """Seconds until the soonest queued call is due (None: none queued)."""
        self.env.flush_all()
        self.env.cr.execute(SQL(
            "SELECT min(next_try) FROM compute_bridge_call WHERE state = %s", QUEUED))
        soonest = self.env.cr.fetchone()[0]
        if soonest is None:
            return None
        return (soonest - fields.Datetime.now()).total_seconds()

    @api.model
    def _due_domain_sql(self, lease):
        now = fields.Datetime.now()
        return SQL("(state = %s AND next_try <= %s) OR (state = %s AND sent_at < %s)",
                   QUEUED, now, SENT, now - lease)

    @api.model
    def _count_due(self, lease):
        self.env.flush_all()
        self.env.cr.execute(SQL("SELECT count(*) FROM compute_bridge_call WHERE %s",
                                self._due_domain_sql(lease)))
        return self.env.cr.fetchone()[0]

    @api.model
    def _claim(self, lease):
        """Mark up to CHUNK_SIZE due calls ``sent`` (attempts + 1) and commit, so that no
        other runner takes them; return ``[(id, attempts)]``. Rows another runner holds are
        skipped, not waited for."""
        query = SQL(
            """UPDATE compute_bridge_call
                  SET state = %(sent)s, attempts = attempts + 1, sent_at = %(now)s,
                      write_date = %(now)s
                WHERE id IN (SELECT id FROM compute_bridge_call WHERE %(due)s
                              ORDER BY next_try, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
            RETURNING id, attempts""",
            sent=SENT, now=fields.Datetime.now(), due=self._due_domain_sql(lease),
            limit=CHUNK_SIZE)
        def claim():
            self.env.flush_all()
            self.env.cr.execute(query, log_exceptions=False)
            rows = self.env.cr.fetchall()
            self.env.invalidate_all()
            # the records show "sent" from the same commit as the calls
            self.browse([row[0] for row in rows])._run_callbacks_isolated()
            return rows

        return self._in_own_transaction(claim) or []

    @api.model
    def _in_own_transaction(self, work):
        """``work()`` then commit; replayed in a new transaction when it met a concurrent
        update (REPEATABLE READ: another server claimed or stored the same rows first).
        Returns ``work()``'s value, or None if it never got through."""
        for _attempt in range(SERIALIZATION_RETRIES):
            try:
                value = work()
                self._commit()
            except psycopg2.errors.SerializationFailure:
                self._rollback()
                continue
            return value
        _logger.info("compute.bridge.call: gave way to concurrent updates %d times",
                     SERIALIZATION_RETRIES)
        return None

    @api.model
    def _commit(self):
        self.env.flush_all()
        # The runner's point: each chunk's claim and outcome committed on their own.
        self.env.cr.commit()  # pylint: disable=invalid-commit

    @api.model
    def _rollback(self):
        self.env.cr.rollback()  # pylint: disable=invalid-commit

    @api.model
    def _send(self, config, claimed):
        """Send the claimed calls, one ``call_many`` per service.method; one result dict each
        (id, attempt, kind, vals to store, batch)."""
        calls = self.browse([row[0] for row in claimed]).with_prefetch()
        attempts = dict(claimed)
        max_attempts = positive_int(
            self.env["ir.config_parameter"].sudo().get_param(MAX_ATTEMPTS_PARAM),
            DEFAULT_MAX_ATTEMPTS)
        groups = {}
        for call in calls:
            groups.setdefault((call.service, call.method), []).append(call.id)
        results = []
        for (service, method), ids in groups.items():
            group = calls.browse(ids)
            try:
                outcomes = self.env["compute.bridge"].sudo()._call_many(
                    service, method,
                    [json.loads(call.args_json) for call in group],
                    [json.loads(call.kwargs_json or "{}") for call in group],
                    require_consumer=True)
            except BridgeError as error:
                outcomes = [(None, error, 0.0)] * len(group)
            for call, (value, error, duration_ms) in zip(group, outcomes, strict=True):
                results.append(call._result(attempts[call.id], max_attempts, value, error,
                                            duration_ms))
        return results

    def _result(self, attempt, max_attempts, value, error, duration_ms):
        self.ensure_one()
        now = fields.Datetime.now()
        kind = outcome_kind(error)
        vals = {"duration": duration_ms}
        if kind == DONE:
            vals.update(state=CALL_DONE, done_at=now, error_message=None,
                        result_json=json.dumps(value))
        else:
            lang = self.user_id.lang or self.env.lang
            vals["error_message"] = self.env["compute.bridge"].with_context(
                lang=lang)._bridge_error_message(error)
            if kind == FAIL or (kind == RETRY and attempt >= max_attempts):
                vals.update(state=FAILED, done_at=now)
            elif kind == RETRY:
                vals.update(state=QUEUED, next_try=now + timedelta(seconds=retry_delay(attempt)))
            else:  # REQUEUE: never delivered, so not counted
                vals.update(state=QUEUED, attempts=attempt - 1,
                            next_try=now + timedelta(seconds=REQUEUE_DELAY))
        return {"id": self.id, "attempt": attempt, "kind": kind, "vals": vals,
                "batch": self.batch}

    @api.model
    def _store(self, results):
        """Store each result on its call if the call is still ``sent`` with the attempt this
        runner sent, and run the callbacks of those that ended: one transaction."""
        by_id = {result["id"]: result for result in results}

        def store():
            self.env.flush_all()
            self.env.invalidate_all()  # a replay must not see the rolled-back writes
            self.env.cr.execute(SQL(
                "SELECT id, attempts FROM compute_bridge_call WHERE id = ANY(%s) AND state = %s "
                "ORDER BY id FOR NO KEY UPDATE", list(by_id), SENT), log_exceptions=False)
            stored = self.browse([call_id for call_id, attempts in self.env.cr.fetchall()
                                  if attempts == by_id[call_id]["attempt"]])
            for call in stored:
                call.write(by_id[call.id]["vals"])
            # queued again too: their records show "queued" again instead of "sent"
            stored._run_callbacks_isolated()
            stored.filtered(lambda call: call.state in (CALL_DONE, FAILED))._notify_users()
            retry_at = stored.filtered(lambda call: call.state == QUEUED).mapped("next_try")
            if retry_at:
                self._wake_runners(min(retry_at))
            return stored

        return self._in_own_transaction(store)

    def _run_callbacks(self):
        """Call each call's callback on its record (those still existing) with the call."""
        by_model = {}
        for call in self.filtered("callback"):
            by_model.setdefault(call.res_model, []).append(call)
        for model, calls in by_model.items():
            # one query for the chunk's records; prefetched together for the callbacks
            existing = self.env[model].browse([call.res_id for call in calls]).exists()
            for call in calls:
                if call.res_id in existing._ids:
                    record = existing.browse(call.res_id).with_prefetch(existing._ids)
                    getattr(record, call.callback)(call)

    def _run_callbacks_isolated(self):
        """:meth:`_run_callbacks`, where a callback that raises fails its own call only (its
        record's writes rolled back, the error on the call) instead of the whole chunk: a
        chunk that could never be stored would be sent again and again."""
        try:
            with self.env.cr.savepoint():
                self._run_callbacks()
            return
        except psycopg2.errors.SerializationFailure:
            raise  # the whole transaction is replayed
        except Exception:  # noqa: BLE001 - an addon's callback: any error, isolated below
            _logger.info("compute.bridge.call: a callback failed; calling them one by one")
        for call in self:
            try:
                with self.env.cr.savepoint():
                    call._run_callbacks()
            except psycopg2.errors.SerializationFailure:
                raise
            except Exception as error:  # noqa: BLE001 - logged and stored on the call
                _logger.exception("compute.bridge.call(%s): callback %s.%s failed",
                                  call.id, call.res_model, call.callback)
                call.write({"state": FAILED, "done_at": fields.Datetime.now(),
                            "error_message": self.env._(
                                "The result could not be stored on %(model)s(%(id)s): %(error)s",
                                model=call.res_model, id=call.res_id, error=error)})

    def _notify_users(self):
        """Tell each queuing user's open views which of their records have a result."""
        by_user = {}
        for call in self.filtered(lambda call: call.user_id and call.res_model):
            by_user.setdefault(call.user_id, {}).setdefault(call.res_model, []).append(
                call.res_id)
        for user, models_ids in by_user.items():
            for model, ids in models_ids.items():
                user._bus_send(BUS_CALLS_ENDED, {"model": model, "ids": ids})

    @api.model
    def _notify_ended_batches(self, batches):
        """Tell the queuing user of each batch in ``batches`` whose calls have all ended.

        Two servers may end a batch's last calls at once: each checks in a new transaction,
        after its own commit, so the later one sees every call ended; the flag update makes
        exactly one of them notify (the other finds it set, or meets a serialization failure
        and gives way)."""
        for batch in batches:
            self._in_own_transaction(lambda batch=batch: self._notify_batch(batch))

    @api.model
    def _notify_batch(self, batch):
        self.env.flush_all()
        self.env.cr.execute(SQL(
            "SELECT 1 FROM compute_bridge_call WHERE batch = %s AND state IN %s LIMIT 1",
            batch, (QUEUED, SENT)))
        if self.env.cr.fetchone():
            return
        self.env.cr.execute(SQL(
            """UPDATE compute_bridge_call SET batch_notified = TRUE
                WHERE batch = %s AND batch_notified IS NOT TRUE RETURNING user_id, state""", batch),
            log_exceptions=False)
        rows = self.env.cr.fetchall()
        self.env.invalidate_all()
        users = {user_id for user_id, _state in rows if user_id}
        if not users:
            return
        failed = sum(state == FAILED for _user_id, state in rows)
        for user in self.env["res.users"].browse(sorted(users)):
            self.with_context(lang=user.lang)._send_batch_notification(user, len(rows), failed)

    @api.model
    def _send_batch_notification(self, user, count, failed):
        if failed:
            message = self.env._("%(failed)s of %(count)s background calls failed.",
                                 failed=failed, count=count)
        else:
            message = self.env._("%(count)s background calls done.", count=count)
        user._bus_send("simple_notification", {
            "title": self.env._("Compute Bridge"), "message": message,
            "type": "warning" if failed else "success", "sticky": bool(failed)})

    @api.model
    def _cron_cleanup(self):
        """Delete ended calls older than the retention of Settings: done and cancelled ones,
        and failed ones too (a failure nobody requeued or cancelled in that time is dropped,
        so the table stays bounded)."""
        days = positive_int(
            self.env["ir.config_parameter"].sudo().get_param(RETENTION_DAYS_PARAM),
            DEFAULT_RETENTION_DAYS)
        old = self.search([("state", "in", (CALL_DONE, CANCELLED, FAILED)),
                           ("done_at", "<", fields.Datetime.now() - timedelta(days=days))])
        _logger.info("compute.bridge.call: deleting %d calls ended over %d days ago",
                     len(old), days)
        old.unlink()


def _wake_later(dbname, seconds, prefork_master):
    timer = threading.Timer(seconds, _wake_runner_in_thread, args=(dbname, prefork_master))
    timer.daemon = True  # never keeps a stopping server alive
    timer.start()


def _wake_runner_in_thread(dbname, prefork_master):
    """In a thread of its own, after :data:`STARTUP_WAKE_DELAY`: see that constant."""
    try:
        with Registry(dbname).cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            lease_ends_in = env["compute.bridge.call"]._wake_for_waiting_calls()
    except psycopg2.Error as error:  # the database went away meanwhile: the cron's poll remains
        _logger.warning("compute.bridge.call: could not wake the runner at start: %s", error)
        return
    finally:
        if prefork_master:
            # The master serves nothing; it empties its connection pool before forking
            # workers, so that no connection is shared among them: leave it empty.
            sql_db.close_db(dbname)
    if lease_ends_in is not None and 0 < lease_ends_in <= LEASE_WAKE_HORIZON:
        _wake_later(dbname, lease_ends_in + 1, prefork_master)

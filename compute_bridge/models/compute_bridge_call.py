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

import collections
import json
import logging
import math
import os
import threading
import time
import weakref
from datetime import timedelta

import psycopg2.errors

from odoo import SUPERUSER_ID, api, fields, models, sql_db
from odoo.exceptions import AccessError, UserError
from odoo.modules.registry import Registry
from odoo.service import server as odoo_server
from odoo.tools import SQL, config

from ..rpc import BridgeError, ServiceTimeout
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
from ..rpc.telemetry import TRACEPARENT_HEADER
from . import cron_notify

_logger = logging.getLogger(__name__)

QUEUED, SENT, CALL_DONE, FAILED, CANCELLED = "queued", "sent", "done", "failed", "cancelled"
# Calls claimed and sent per run of the cron's action: one RPC deadline, one commit. The cron
# runs again at once while calls remain (ir.cron's progress API), so a long queue is drained in
# chunks, each committed, that two Odoo servers share.
CHUNK_SIZE = 200
# A service slower than CHUNK_SIZE calls per RPC timeout cannot answer a whole chunk in time:
# the rest would time out, be counted, and wait in its queue as stale requests ahead of the next
# chunk, which then times out too. So each process sends a service.method at most what it has
# seen that service answer within one deadline (times CHUNK_SAFETY, for the other runners and
# servers sending to it as well), and pauses it while the unanswered requests are still being
# worked off. A chunk answered in full sizes the next one by the rate it was answered at (at least
# one more call), so the chunk grows back toward CHUNK_SIZE as fast as the service allows.
CHUNK_SAFETY = 0.5
MIN_CHUNK_SIZE = 1
MIN_ELAPSED = 0.001  # seconds: a send's duration as measured is never taken as shorter
# A call whose service is not running is tried again after this fraction of the time it has
# waited since it was queued (at least REQUEUE_DELAY, at most NOT_RUNNING_MAX_DELAY seconds):
# soon after a restart, without waking the runner every few seconds for a service that is gone.
NOT_RUNNING_BACKOFF = 0.1
NOT_RUNNING_MAX_DELAY = 60  # seconds
# Keep Background Calls (days) above this is refused, and clamped when read: a date that far
# back is the oldest datetime can go.
MAX_RETENTION_DAYS = 36500
# Seconds past the RPC timeout after which a ``sent`` call is taken as lost (its Odoo died
# between the claim and the commit of the outcome) and is sent again.
LEASE_GRACE = 30
# Times a transaction that met a concurrent update (another server, a user's edit) is replayed.
SERIALIZATION_RETRIES = 3
# A queued call not sent this long after its next try, a sent one past its lease, or one tried
# and still not delivered (its service not running) this long after it was queued, is stuck.
STUCK_AFTER = timedelta(minutes=5)
MANAGER_GROUP = "compute_bridge.group_compute_bridge_manager"
RUNNER_CRON = "compute_bridge.ir_cron_compute_bridge_run_calls"
# Odoo runs one scheduled action in one process at a time (its ir_cron row stays locked while it
# runs): two runner jobs let two servers, or two cron threads of one, send chunks at the same
# time, the claim's SKIP LOCKED splitting the rows between them.
RUNNER_CRONS = (RUNNER_CRON, "compute_bridge.ir_cron_compute_bridge_run_calls_2")
NOTIFY_KEY = "compute_bridge.notify_cron_threads"  # postcommit data: the NOTIFY is planned
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

# One run of a runner job (ir.cron runs its action up to 10 times in one run) stops taking
# chunks after a budget of time (see _run_budget), at least the MIN, at most the MAX; the budget
# leaves STORE_MARGIN seconds per job for storing a chunk's outcomes.
MIN_RUN_BUDGET, MAX_RUN_BUDGET, STORE_MARGIN = 2.0, 60.0, 10.0  # seconds
_JOB_RUN = threading.local()  # the cursor of this thread's runner job run, and its start

# This process's pace per (database, service, method): chunk size and the time before which
# nothing is sent to it (see CHUNK_SAFETY). Shared by the process's cron threads.
_PACE = {}
_PACE_LOCK = threading.Lock()


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
    queued_at = fields.Datetime(
        readonly=True, default=fields.Datetime.now,
        help="When the call was queued, or requeued by hand.")
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
    traceparent = fields.Char(
        string="Trace Context", readonly=True, copy=False,
        help="The W3C trace context of the request that queued the call: it is sent with the "
             "call, so that the services' log lines and spans are in that click's trace.")
    is_stuck = fields.Boolean(
        string="Stuck", compute="_compute_is_stuck", search="_search_is_stuck",
        help="Queued and not sent long after its next try, sent and never answered, or "
        "waiting long for a service that is not running.")

    @api.depends("service", "method")
    def _compute_display_method(self):
        for call in self:
            call.display_method = "%s.%s" % (call.service, call.method)

    @api.depends("state", "next_try", "sent_at", "queued_at", "error_message")
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
        return ["|", "|", "&", ("state", "=", QUEUED), ("next_try", "<", before),
                "&", ("state", "=", SENT), ("sent_at", "<", before),
                "&", "&", ("state", "=", QUEUED), ("error_message", "!=", False),
                ("queued_at", "<", before)]

    # --- what a callback reads ------------------------------------------------------------
    @property
    def result(self):
        """The service's result, decoded (None until done)."""
        self.ensure_one()
        return json.loads(self.result_json) if self.result_json else None

    # --- buttons --------------------------------------------------------------------------
    def action_requeue(self):
        """Send failed, cancelled or stuck calls again, as new: attempts start over. A
        cancelled call with a record is refused: cancelling released its record (an
        operation back to draft, free to change or be queued again), which no longer waits
        for it."""
        self._check_manager()
        for call in self:
            if call.state == CANCELLED and call.callback:
                raise UserError(self.env._(
                    "%(call)s was cancelled and its record %(model)s(%(id)s) no longer waits "
                    "for it: queue the record again from the record itself.",
                    call=call.display_name, model=call.res_model, id=call.res_id))
            if call.state not in (FAILED, CANCELLED) and not call.is_stuck:
                raise UserError(self.env._(
                    "%(call)s is %(state)s: only failed, cancelled or stuck calls can be "
                    "requeued.", call=call.display_name, state=call._state_label()))
        now = fields.Datetime.now()
        self.sudo().write({"state": QUEUED, "attempts": 0, "next_try": now, "queued_at": now,
                           "error_message": False, "batch_notified": False})
        self._run_callbacks()
        if self:
            self._wake_runners()
        return True

    def action_cancel(self):
        """Stop queued, sent or failed calls; a result that arrives later is not stored."""
        self._check_manager()
        for call in self:
            if call.state not in (QUEUED, SENT, FAILED):
                raise UserError(self.env._(
                    "%(call)s is %(state)s: only queued, sent or failed calls can be "
                    "cancelled.", call=call.display_name, state=call._state_label()))
        self.sudo().write({"state": CANCELLED, "done_at": fields.Datetime.now()})
        self._run_callbacks()
        for batch in set(self.mapped("batch")):  # told with this transaction's commit
            self.sudo()._notify_batch(batch)
        return True

    @api.ondelete(at_uninstall=False)
    def _unlink_cancels_calls_under_way(self):
        """A queued or sent call's record waits for it (an operation stays queued): deleting
        the call is refused to a person, who cancels it first; code running as superuser
        (the tests' clean-up, a data fix) gets it cancelled, callbacks run, then deleted."""
        under_way = self.filtered(lambda call: call.state in (QUEUED, SENT))
        if not under_way:
            return
        if not self.env.su:
            raise UserError(self.env._(
                "%(call)s is %(state)s: cancel it before deleting it (its record waits for "
                "it).", call=under_way[0].display_name, state=under_way[0]._state_label()))
        under_way.write({"state": CANCELLED, "done_at": fields.Datetime.now()})
        under_way._run_callbacks()

    def _state_label(self):
        self.ensure_one()
        return dict(self._fields["state"]._description_selection(self.env))[self.state]

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
        if config["stop_after_init"] or not config["max_cron_threads"]:
            return
        if config["test_enable"] or getattr(threading.current_thread(), "testing", False):
            # A test runner (pytest-odoo loads the registry without test_enable): the wake's
            # thread would read system parameters in a transaction of its own and cache the
            # committed values over those a running test has set.
            return
        server = odoo_server.server
        if server is None:
            return  # a shell or a script, not a server: no cron thread to wake
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
            results = []
            for group_results in self._send(config, claimed):
                self._store(group_results)
                results.extend(group_results)
            self._notify_ended_batches({result["batch"] for result in results})
            if all(result["kind"] == REQUEUE for result in results):
                # Nothing could be delivered (broker or service away): wait a little here,
                # since a cron trigger is only precise to the minute, then report the calls
                # due so the cron runs again and sends them as soon as the service is back.
                time.sleep(REQUEUE_DELAY)
        remaining = self._count_due(lease)
        if remaining and _job_run_elapsed(self.env.cr) >= _run_budget(config.timeout):
            # ir.cron runs this again and again while calls remain, in one run of the job:
            # end the run here (nothing remaining, as far as ir.cron knows) and trigger a new
            # one at once, before Odoo's real time limit kills the cron worker or thread.
            self.env["ir.cron"]._notify_progress(done=len(claimed), remaining=0)
            self._wake_runners()
            return
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
        jobs = self.env["ir.cron"].sudo()
        for xmlid in crons:
            jobs |= self.env.ref(xmlid, raise_if_not_found=False) or jobs
        now = fields.Datetime.now()
        if at is not None and at > now:
            return self.env["ir.cron.trigger"].union(*(job._trigger(at) for job in jobs))
        # What ir.cron._trigger() does for now, but its NOTIFY after the commit goes over this
        # process's kept connection rather than a new one each time (see cron_notify).
        triggers = self.env["ir.cron.trigger"].sudo().create(
            [{"cron_id": job.id, "call_at": now} for job in jobs.filtered("active")])
        postcommit = self.env.cr.postcommit
        if triggers and not postcommit.data.get(NOTIFY_KEY):
            postcommit.data[NOTIFY_KEY] = True
            dbname = self.env.cr.dbname
            postcommit.add(lambda: cron_notify.notify_cron_threads(dbname))
        return triggers

    @api.model
    def _seconds_to_next_try(self):
        """Seconds until the soonest queued call is due (None: none queued); a call of a
        paused service.method is due at the end of the pause."""
        self.env.flush_all()
        paused = self._paused()
        self.env.cr.execute(SQL(
            "SELECT service || '.' || method, min(next_try) FROM compute_bridge_call"
            " WHERE state = %s GROUP BY service, method", QUEUED))
        due_at = [max(next_try, paused.get(name, next_try))
                  for name, next_try in self.env.cr.fetchall()]
        if not due_at:
            return None
        return (min(due_at) - fields.Datetime.now()).total_seconds()

    @api.model
    def _due_domain_sql(self, lease):
        now = fields.Datetime.now()
        return SQL("((state = %s AND next_try <= %s) OR (state = %s AND sent_at < %s))"
                   " AND service || '.' || method <> ALL(%s::text[])",
                   QUEUED, now, SENT, now - lease, list(self._paused()))

    # --- the pace of each service.method (see CHUNK_SAFETY) -------------------------------
    @api.model
    def _pace_key(self, service, method):
        return (self.env.cr.dbname, service, method)

    @api.model
    def _paused(self):
        """{"service.method": end of its pause} for this database's paused ones."""
        now = fields.Datetime.now()
        with _PACE_LOCK:
            return {"%s.%s" % (service, method): resume_at
                    for (db, service, method), (_size, resume_at) in _PACE.items()
                    if db == self.env.cr.dbname and resume_at > now}

    @api.model
    def _chunk_sizes(self):
        """[(service, method, size)] of this database's service.methods sent in chunks
        smaller than CHUNK_SIZE."""
        with _PACE_LOCK:
            return [(service, method, size)
                    for (db, service, method), (size, _resume_at) in _PACE.items()
                    if db == self.env.cr.dbname and size < CHUNK_SIZE]

    @api.model
    def _pace_after(self, service, method, sent, answered, elapsed, timeout):
        """Adapt the pace of ``service.method`` to a send of ``sent`` calls of which
        ``answered`` were answered in ``elapsed`` seconds, the others not before the
        ``timeout``; return the end of its pause (None: not paused)."""
        key = self._pace_key(service, method)
        now = fields.Datetime.now()
        with _PACE_LOCK:
            size, resume_at = _PACE.get(key, (CHUNK_SIZE, now))
            if answered == sent:
                rate = sent / max(elapsed, MIN_ELAPSED)
                size = min(CHUNK_SIZE, max(size + 1, int(rate * timeout * CHUNK_SAFETY)))
            elif answered:
                rate = answered / max(elapsed, timeout)
                size = max(MIN_CHUNK_SIZE, int(rate * timeout * CHUNK_SAFETY))
                # the unanswered requests are still in the service's queue, ahead of any new one
                resume_at = _seconds_after(now, (sent - answered) / rate)
            else:  # nothing answered: no rate to go by, the retries' backoff paces it
                size = MIN_CHUNK_SIZE
            _PACE[key] = (size, resume_at)
        return resume_at if resume_at > now else None

    @api.model
    def _count_due(self, lease):
        self.env.flush_all()
        self.env.cr.execute(SQL("SELECT count(*) FROM compute_bridge_call WHERE %s",
                                self._due_domain_sql(lease)))
        return self.env.cr.fetchone()[0]

    @api.model
    def _claim(self, lease):
        """Mark up to CHUNK_SIZE due calls ``sent`` (attempts + 1), at most the chunk size
        of each service.method, and commit, so that no other runner takes them; return
        ``[(id, attempts)]``. Rows another runner holds are skipped, not waited for. A call
        whose lease ran out after its last attempt is failed instead: whatever stopped its
        runner each time (a crash, a hang) would stop it again."""
        sizes = self._chunk_sizes()
        now = fields.Datetime.now()
        query = SQL(
            """WITH locked AS (
                    SELECT id, service, method, next_try FROM compute_bridge_call WHERE %(due)s
                     ORDER BY next_try, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
                ranked AS (
                    SELECT id, service, method, row_number() OVER (
                        PARTITION BY service, method ORDER BY next_try, id) AS rank
                      FROM locked)
               UPDATE compute_bridge_call
                  SET state = %(sent)s, attempts = attempts + 1, sent_at = %(now)s,
                      write_date = %(now)s
                WHERE id IN (
                    SELECT ranked.id FROM ranked
                      LEFT JOIN unnest(%(services)s::text[], %(methods)s::text[],
                                       %(sizes)s::int[]) AS pace(service, method, size)
                        ON pace.service = ranked.service AND pace.method = ranked.method
                     WHERE ranked.rank <= coalesce(pace.size, %(limit)s))
            RETURNING id, attempts""",
            sent=SENT, now=now, due=self._due_domain_sql(lease), limit=CHUNK_SIZE,
            services=[size[0] for size in sizes], methods=[size[1] for size in sizes],
            sizes=[size[2] for size in sizes])
        lost = SQL(
            """UPDATE compute_bridge_call
                  SET state = %(failed)s, done_at = %(now)s, write_date = %(now)s,
                      error_message = %(message)s
                WHERE state = %(sent)s AND sent_at < %(expired)s AND attempts >= %(max)s
            RETURNING id""",
            failed=FAILED, now=now, sent=SENT, expired=now - lease,
            max=self._max_attempts(), message=self.env._(
                "No outcome was stored for any of its attempts: the server sending it stopped "
                "or failed each time (see its log)."))

        lost_batches = set()

        def claim():
            self.env.flush_all()
            self.env.cr.execute(lost, log_exceptions=False)
            failed = self.browse([row[0] for row in self.env.cr.fetchall()])
            lost_batches.clear()
            lost_batches.update(failed.mapped("batch"))
            self.env.cr.execute(query, log_exceptions=False)
            rows = self.env.cr.fetchall()
            self.env.invalidate_all()
            if failed:
                _logger.warning("compute.bridge.call: %d calls failed after their last lease "
                                "ran out", len(failed))
                failed._notify_users()
            # the records show "sent" (or failed) from the same commit as the calls
            (failed | self.browse([row[0] for row in rows]))._run_callbacks_isolated()
            return rows

        claimed = self._in_own_transaction(claim) or []
        self._notify_ended_batches(lost_batches)
        return claimed

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
        """Send the claimed calls, one ``call_many`` per service.method; yield the results of
        each service.method (one dict each: id, attempt, kind, vals to store, batch) before
        sending the next one. Each one's lease starts when it is sent: several slow
        service.methods of one chunk, one after another, would otherwise outlast the leases
        taken at the claim, and another runner would take their calls for lost."""
        calls = self.browse([row[0] for row in claimed]).with_prefetch()
        attempts = dict(claimed)
        max_attempts = self._max_attempts()
        allowed = self.env["compute.bridge"]._allowed_methods()
        groups = {}
        for call in calls:
            groups.setdefault((call.service, call.method), []).append(call.id)
        for position, ((service, method), ids) in enumerate(groups.items()):
            group = calls.browse(ids)
            if position:
                group._renew_lease(attempts)
            results = []
            if "%s.%s" % (service, method) not in allowed:
                # taken off the allow-list since it was queued: refused the same every time
                yield [call._error_result(
                    attempts[call.id], max_attempts, FAIL,
                    call._bridge()._not_allowed_message(call.display_method))
                    for call in group]
                continue
            try:
                outcomes, resume_at = group._send_group(config)
            except Exception as error:  # noqa: BLE001 - logged, and counted on each call
                # Stored as a counted attempt, so that a call that cannot be sent ends failed
                # after max_attempts instead of being claimed again and again.
                _logger.exception("compute.bridge.call: sending %s.%s failed", service, method)
                yield [call._error_result(
                    attempts[call.id], max_attempts, RETRY, call._bridge().env._(
                        "The call could not be sent: %(error)s", error=error))
                    for call in group]
                continue
            for call, (value, error, duration_ms) in zip(group, outcomes, strict=True):
                result = call._result(attempts[call.id], max_attempts, value, error,
                                      duration_ms)
                if resume_at and result["vals"]["state"] == QUEUED:
                    result["vals"]["next_try"] = max(result["vals"]["next_try"], resume_at)
                results.append(result)
            yield results

    def _renew_lease(self, attempts):
        """The lease of the calls of ``self`` still ``sent`` with the attempt ``attempts``
        gives (by id) starts now, committed before they are sent."""
        def renew():
            self.env.cr.execute(SQL(
                "UPDATE compute_bridge_call SET sent_at = %s WHERE id = ANY(%s) AND state = %s"
                " AND attempts = (%s::jsonb ->> id::text)::int",
                fields.Datetime.now(), self.ids, SENT,
                json.dumps({str(call_id): attempts[call_id] for call_id in self.ids})),
                log_exceptions=False)
            self.invalidate_recordset(["sent_at"])

        self._in_own_transaction(renew)

    def _send_group(self, config):
        """Send the calls of ``self`` (one service.method) in one ``call_many`` and adapt the
        pace of that service.method to how many it answered in time; return their outcomes
        and the end of its pause (None: not paused), before which the unanswered ones are
        not sent again."""
        service, method = self[0].service, self[0].method
        started = time.monotonic()
        try:
            outcomes = self.env["compute.bridge"].sudo()._call_many(
                service, method,
                [json.loads(call.args_json) for call in self],
                [json.loads(call.kwargs_json or "{}") for call in self],
                require_consumer=True,
                headers_list=[{TRACEPARENT_HEADER: call.traceparent} if call.traceparent
                              else None for call in self])
        except BridgeError as error:
            return [(None, error, 0.0)] * len(self), None
        answered = sum(not isinstance(error, ServiceTimeout) for _value, error, _ms in outcomes)
        resume_at = self._pace_after(service, method, len(outcomes), answered,
                                     time.monotonic() - started, config.timeout)
        if resume_at:
            _logger.info("compute.bridge.call: %s.%s answered %d of %d in time: next chunk "
                         "%d, paused until %s", service, method, answered, len(outcomes),
                         _PACE[self._pace_key(service, method)][0], resume_at)
        return outcomes, resume_at

    def _result(self, attempt, max_attempts, value, error, duration_ms):
        self.ensure_one()
        kind = outcome_kind(error)
        if kind != DONE:
            return self._error_result(attempt, max_attempts, kind,
                                      self._bridge()._bridge_error_message(error), duration_ms)
        vals = {"duration": duration_ms, "state": CALL_DONE, "done_at": fields.Datetime.now(),
                "error_message": None, "result_json": json.dumps(value)}
        return {"id": self.id, "attempt": attempt, "kind": kind, "vals": vals,
                "batch": self.batch}

    def _error_result(self, attempt, max_attempts, kind, message, duration_ms=0.0):
        """The result of attempt ``attempt`` ended without a value: ``kind`` (FAIL, RETRY or
        REQUEUE) and the ``message`` the user reads."""
        self.ensure_one()
        now = fields.Datetime.now()
        vals = {"duration": duration_ms, "error_message": message}
        if kind == FAIL or (kind == RETRY and attempt >= max_attempts):
            vals.update(state=FAILED, done_at=now)
        elif kind == RETRY:
            vals.update(state=QUEUED, next_try=_seconds_after(now, retry_delay(attempt)))
        else:  # REQUEUE: never delivered, so not counted; less often the longer it waits
            waited = (now - (self.queued_at or self.create_date)).total_seconds()
            delay = min(max(REQUEUE_DELAY, waited * NOT_RUNNING_BACKOFF), NOT_RUNNING_MAX_DELAY)
            vals.update(state=QUEUED, attempts=attempt - 1, next_try=_seconds_after(now, delay))
        return {"id": self.id, "attempt": attempt, "kind": kind, "vals": vals,
                "batch": self.batch}

    def _bridge(self):
        """compute.bridge in the language of the user who queued the call (its messages)."""
        self.ensure_one()
        return self.env["compute.bridge"].with_context(lang=self.user_id.lang or self.env.lang)

    @api.model
    def _max_attempts(self):
        return positive_int(
            self.env["ir.config_parameter"].sudo().get_param(MAX_ATTEMPTS_PARAM),
            DEFAULT_MAX_ATTEMPTS)

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
        ended = collections.Counter(state for _user_id, state in rows)
        for user in self.env["res.users"].browse(sorted(users)):
            self.with_context(lang=user.lang)._send_batch_notification(user, ended)

    @api.model
    def _send_batch_notification(self, user, ended):
        """``ended``: how many calls of the batch ended in each state."""
        count, failed = ended.total(), ended[FAILED]
        if ended[CALL_DONE] == count:
            message = self.env._("%(count)s background calls done.", count=count)
        else:
            message = self.env._(
                "%(done)s of %(count)s background calls done, %(failed)s failed, "
                "%(cancelled)s cancelled.", done=ended[CALL_DONE], count=count, failed=failed,
                cancelled=ended[CANCELLED])
        kind = "warning" if failed else "success" if ended[CALL_DONE] == count else "info"
        user._bus_send("simple_notification", {
            "title": self.env._("Compute Bridge"), "message": message,
            "type": kind, "sticky": bool(failed)})

    @api.model
    def _cron_cleanup(self):
        """Delete ended calls older than the retention of Settings: done and cancelled ones,
        and failed ones too (a failure nobody requeued or cancelled in that time is dropped,
        so the table stays bounded)."""
        days = min(positive_int(
            self.env["ir.config_parameter"].sudo().get_param(RETENTION_DAYS_PARAM),
            DEFAULT_RETENTION_DAYS), MAX_RETENTION_DAYS)
        old = self.search([("state", "in", (CALL_DONE, CANCELLED, FAILED)),
                           ("done_at", "<", fields.Datetime.now() - timedelta(days=days))])
        _logger.info("compute.bridge.call: deleting %d calls ended over %d days ago",
                     len(old), days)
        old.unlink()


def _run_budget(timeout):
    """Seconds one run of a runner job may go on taking chunks, under Odoo's real time limit of
    cron workers and threads (--limit-time-real-cron, else --limit-time-real): both runner jobs
    may run one after the other in one cron worker's pass, and each may go over its budget by
    one chunk (one RPC deadline, ``timeout``) and the storing of it."""
    limit = config["limit_time_real_cron"]
    if limit is None or limit < 0:
        limit = config["limit_time_real"]
    if not limit or limit <= 0:
        return MAX_RUN_BUDGET
    budget = limit / len(RUNNER_CRONS) - timeout - STORE_MARGIN
    if budget < MIN_RUN_BUDGET:
        _logger.warning("compute.bridge.call: Odoo's real time limit of crons (%ss) is short for"
                        " the RPC timeout (%ss): raise --limit-time-real-cron above %ds",
                        limit, timeout, len(RUNNER_CRONS) * (timeout + STORE_MARGIN
                                                             + MIN_RUN_BUDGET))
    return min(MAX_RUN_BUDGET, max(MIN_RUN_BUDGET, budget))


def _job_run_elapsed(cr):
    """Seconds since the first chunk of the current run of a runner job in this thread: ir.cron
    gives every chunk of one run the same cursor, and a new cursor to the next run."""
    if getattr(_JOB_RUN, "cursor", lambda: None)() is not cr:
        _JOB_RUN.cursor = weakref.ref(cr)
        _JOB_RUN.started = time.monotonic()
    return time.monotonic() - _JOB_RUN.started


def _seconds_after(now, seconds):
    """``now`` (a whole second, as fields.Datetime.now() gives) plus ``seconds`` rounded up to a
    whole second: the runner finds a call due by comparing with that clock, so a time with a
    fraction would still be ahead of it when the runner wakes up to send the call, and the
    run would end with nothing due (the cron then sleeps up to a minute).

    >>> from datetime import datetime
    >>> _seconds_after(datetime(2026, 1, 1, 12, 0, 0), 4.4)
    datetime.datetime(2026, 1, 1, 12, 0, 5)
    """
    return now + timedelta(seconds=math.ceil(seconds))


def _wake_later(dbname, seconds, prefork_master):
    timer = threading.Timer(seconds, _wake_runner_in_thread, args=(dbname, prefork_master))
    timer.daemon = True  # never keeps a stopping server alive
    timer.start()


def _wake_runner_in_thread(dbname, prefork_master):
    """In a thread of its own, after :data:`STARTUP_WAKE_DELAY`: see that constant."""
    try:
        registry = Registry(dbname)
        if ComputeBridgeCall._name not in registry:
            return  # the module was uninstalled meanwhile
        with registry.cursor() as cr:
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

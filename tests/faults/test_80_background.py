"""Background calls (compute.bridge.call_later, "Suma in background") against the real broker,
services and Odoo servers that drain them in their own cron threads or cron worker.

The session's Odoo server (conftest.py) runs no scheduled action (max_cron_threads=0): it only
queues. This module starts, on the same database, the servers that drain: ``prefork`` (2 HTTP
workers and a cron worker) and ``threaded`` (``workers=0``, one cron thread), each with its
PostgreSQL application_name. A trigger on compute_operation, created here, records every
transaction that leaves an operation ``done`` and the process that ran it: "applied once" is one
such transaction per operation, whatever the number of sends.
"""

import collections
import contextlib
import json
import statistics
import threading
import time

import faults_harness as harness
import psycopg2
import pytest
from conftest import RPC_TIMEOUT, find_odoo_src, pg_settings, set_bridge_params
from faults_harness import RpcError, click, create_operations, notification, read_operations

pytestmark = pytest.mark.odoo

CALL = "compute.bridge.call"
QUEUED_STATES = ("queued", "sent")
DRAIN_TIMEOUT = 120  # seconds: every bounded wait for calls to finish, with room to spare
TRIED_TIMEOUT = 60  # seconds for the runner to have tried a call at least once
STATE_POLL = 0.5  # seconds between two looks at the calls' states
SAMPLES = 5  # interactive requests per measurement (idle, then with a backlog)
# Seconds an interactive request may take with the backlog: generous (a busy 2-core machine).
# A held worker would make it wait for a whole chunk of 2 s calls (200 x 2 s / 10 service
# workers = 40 s); the synchronous Suma must moreover succeed within its own RPC timeout.
INTERACTIVE_BOUND = 10
ALLOW_SLOW = "compute.method slow.method"  # the allow-list while the slow service is called
DEFAULT_ALLOWED = "compute.method"

APPLIED_SQL = """
CREATE TABLE IF NOT EXISTS faults_applied (
    op_id integer, result double precision, txid bigint, app text);
TRUNCATE faults_applied;
CREATE OR REPLACE FUNCTION faults_applied_log() RETURNS trigger AS $$
BEGIN
    INSERT INTO faults_applied
        VALUES (NEW.id, NEW.result, txid_current(), current_setting('application_name'));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS faults_applied ON compute_operation;
CREATE TRIGGER faults_applied AFTER UPDATE ON compute_operation
    FOR EACH ROW WHEN (NEW.state = 'done') EXECUTE FUNCTION faults_applied_log();
"""
DROP_APPLIED_SQL = """
DROP TRIGGER IF EXISTS faults_applied ON compute_operation;
DROP FUNCTION IF EXISTS faults_applied_log();
DROP TABLE IF EXISTS faults_applied;
"""


# ---------------------------------------------------------------------------------------------
class Drainers:
    """The two servers that run background calls, started and stopped per test."""

    def __init__(self, src, db):
        self.prefork = harness.OdooServer(src, db, harness.RUN_DIR, workers=2, cron_threads=1,
                                          name="odoo-bg-prefork")
        self.threaded = harness.OdooServer(src, db, harness.RUN_DIR, workers=0, cron_threads=1,
                                           name="odoo-bg-threaded")
        self.all = (self.prefork, self.threaded)

    def only(self, *servers):
        """Exactly ``servers`` running (the others stopped), started side by side."""
        for server in self.all:
            if server not in servers and server.running:
                server.stop()
        starting = [threading.Thread(target=server.start) for server in servers
                    if not server.running]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join(300)
        not_up = [server.name for server in servers if not server.running]
        assert not not_up, "did not start: %s" % not_up

    def stop(self):
        for server in self.all:
            server.stop()


@pytest.fixture(scope="module")
def drainers(odoo):
    src, _why = find_odoo_src()
    servers = Drainers(src, odoo.db)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def pg(odoo):
    settings = pg_settings()
    conn = psycopg2.connect(dbname=odoo.db, host=settings["host"], port=settings["port"],
                            user=settings["user"], password=settings["password"])
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(APPLIED_SQL)
    try:
        yield conn
    finally:
        with conn.cursor() as cr:
            cr.execute(DROP_APPLIED_SQL)
        conn.close()


def sql(pg, query, params=()):
    with pg.cursor() as cr:
        cr.execute(query, params)
        return cr.fetchall()


@pytest.fixture()
def bridge(admin, broker):
    """Admin's client, with the defaults of the bridge's settings restored after the test."""
    yield admin
    set_bridge_params(admin, broker.uri(), RPC_TIMEOUT)
    for key, value in (("compute_bridge.allowed_methods", DEFAULT_ALLOWED),
                       ("compute_bridge.max_attempts", "5")):
        admin.call("ir.config_parameter", "set_param", key, value)


# ---------------------------------------------------------------------------------------------
def queue(client, ids):
    """The "Suma in background" button."""
    return client.call(harness.OPERATION, "action_suma_queue", list(ids))


def server_action(client, name, code):
    """A server action on compute.operation running ``code`` (Python, as an admin writes it)."""
    [model_id] = client.call("ir.model", "search", [("model", "=", harness.OPERATION)])
    return client.call("ir.actions.server", "create", {
        "name": name, "model_id": model_id, "state": "code", "code": code})


def run_action(client, action_id, ids):
    return client.call("ir.actions.server", "run", [action_id], context={
        "active_model": harness.OPERATION, "active_ids": list(ids), "active_id": ids[0]})


def op_states(pg, ids):
    return dict(sql(pg, "SELECT state, count(*) FROM compute_operation WHERE id = ANY(%s)"
                        " GROUP BY state", (list(ids),)))


def call_states(pg, where, params):
    return dict(sql(pg, "SELECT state, count(*) FROM compute_bridge_call WHERE %s"
                        " GROUP BY state" % where, params))


def calls_of_ops(pg, ids):
    return call_states(pg, "res_model = 'compute.operation' AND res_id = ANY(%s)", (list(ids),))


def wait_ops(pg, ids, state="done", timeout=DRAIN_TIMEOUT):
    """Seconds until every operation of ``ids`` is ``state`` (bounded)."""
    started = time.monotonic()
    harness.wait_until(lambda: op_states(pg, ids) == {state: len(ids)}, timeout,
                       interval=STATE_POLL, what="%d operations %s" % (len(ids), state))
    return time.monotonic() - started


def tried(pg, ids):
    """Calls of ``ids`` the runner has tried and put back in the queue: sent and counted, or
    postponed without counting (nothing was delivered)."""
    return sql(pg, "SELECT count(*) FROM compute_bridge_call WHERE res_id = ANY(%s)"
                   " AND res_model = 'compute.operation' AND state = 'queued'"
                   " AND (attempts > 0 OR next_try > create_date + interval '1 second')",
               (list(ids),))[0][0]


def waiting_then_done(pg, admin, ops, pairs, why, bring_back):
    """The calls of ``ops`` tried (``why``: what keeps them from being done) and still waiting,
    none done or failed; then ``bring_back()``, and all done right once. Returns their states
    while waiting and the seconds from ``bring_back()`` to all done."""
    harness.wait_until(lambda: tried(pg, ops), TRIED_TIMEOUT, interval=STATE_POLL,
                       what="the runner trying the calls with %s" % why)
    waiting = calls_of_ops(pg, ops)
    assert set(waiting) <= set(QUEUED_STATES) and sum(waiting.values()) == len(ops), waiting
    assert set(op_states(pg, ops)) <= set(QUEUED_STATES), op_states(pg, ops)
    started = time.monotonic()
    bring_back()
    wait_ops(pg, ops)
    elapsed = time.monotonic() - started
    assert_right_once(pg, admin, ops, pairs)
    return waiting, elapsed


def assert_right_once(pg, admin, ids, pairs):
    """Each operation done with its sum, the sum applied by exactly one transaction."""
    rows = read_operations(admin, ids)
    wrong = [(row, a + b) for row, (a, b) in zip(rows, pairs, strict=True)
             if row["state"] != "done" or row["result"] != a + b]
    assert not wrong, wrong[:5]
    applied = dict(sql(pg, "SELECT op_id, count(DISTINCT txid) FROM faults_applied"
                           " WHERE op_id = ANY(%s) GROUP BY op_id", (list(ids),)))
    twice = {op: n for op, n in applied.items() if n != 1}
    assert not twice, "applied more than once: %s" % list(twice.items())[:5]
    assert len(applied) == len(ids), "%d of %d applications recorded" % (len(applied), len(ids))
    calls = calls_of_ops(pg, ids)
    assert calls.get("done") == len(ids), calls


def sums_seen(fleet, total):
    """How many times notify logged the sum ``total`` (one per compute.method call)."""
    line = "Operation completed %s" % total
    return sum(log.count(line) for log in fleet.logs().values())


# ---------------------------------------------------------------------------------------------
def test_rolled_back_queuing_sends_nothing(odoo, drainers, bridge, fleet, pg):
    """A server action queues (the button's method and compute.bridge.call_later) then raises:
    no call row, no send. The same queuing committed is sent: the runner did run after it."""
    drainers.only(drainers.prefork)
    base = 80_100_000
    ops = create_operations(bridge, [(base + i, 0.5) for i in range(3)])
    action = server_action(bridge, "faults: queue then raise", (
        "records.action_suma_queue()\n"
        "env['compute.bridge'].sudo().call_later('compute', 'method', args=(%d, 0.5))\n"
        "raise UserError('rolled back on purpose')\n" % (base + 50)))
    with pytest.raises(RpcError) as raised:
        run_action(bridge, action, ops)
    # fault 2: the UserError itself (any other exception, e.g. no such method, is fault 1)
    assert (raised.value.kind, raised.value.message) == (2, "rolled back on purpose"), \
        raised.value.message[-2000:]
    assert op_states(pg, ops) == {"draft": 3}
    assert calls_of_ops(pg, ops) == {}
    assert sql(pg, "SELECT count(*) FROM compute_bridge_call WHERE args_json LIKE %s",
               ("%%%d%%" % (base + 50),))[0][0] == 0

    [control] = create_operations(bridge, [(base + 100, 0.5)])
    committed = server_action(bridge, "faults: queue", "records.action_suma_queue()\n")
    run_action(bridge, committed, [control])
    elapsed = wait_ops(pg, [control])
    harness.wait_until(lambda: sums_seen(fleet, base + 100.5) == 1, 10,
                       what="notify logging the committed call")
    seen = {base + i + 0.5: sums_seen(fleet, base + i + 0.5) for i in (0, 1, 2, 50)}
    assert not any(seen.values()), "the rolled-back transaction's calls were sent: %s" % seen
    harness.measure("background: rolled back", "3 operations + 1 call_later queued then raised:"
                    " 0 rows, 0 sends; the committed one done in %.1f s" % elapsed)


def test_services_down_then_up(drainers, bridge, fleet, pg):
    """200 queued with no compute consumer stay queued (tried, not failed); one instance
    started, all 200 done with their sums, nobody pressing anything."""
    drainers.only(drainers.prefork)
    fleet.stop_all()
    pairs = [(80_200_000 + i, 0.25) for i in range(200)]
    ops = create_operations(bridge, pairs)
    queue(bridge, ops)
    waiting, elapsed = waiting_then_done(pg, bridge, ops, pairs, "no consumer",
                                         lambda: fleet.ensure(1))
    harness.measure("background: services down", "200 stayed %s while no consumer; done %.1f s "
                    "after `nameko run` started" % (waiting, elapsed))


def test_broker_down_queuing_succeeds(drainers, bridge, broker, fleet, pg):
    """The broker stopped: the button still queues; the broker back, every call done."""
    drainers.only(drainers.prefork)
    pairs = [(80_300_000 + i, 0.75) for i in range(50)]
    ops = create_operations(bridge, pairs)
    broker.stop()
    started = time.monotonic()
    queue(bridge, ops)
    queued_in = time.monotonic() - started

    def broker_back():
        broker.node.start()
        fleet.ensure(1)

    waiting, elapsed = waiting_then_done(pg, bridge, ops, pairs, "the broker down", broker_back)
    harness.measure("background: broker down", "50 queued in %.2f s with the broker stopped (%s);"
                    " all done %.1f s after it restarted" % (queued_in, waiting, elapsed))


def test_refused_operand_fails_at_once(drainers, bridge, pg):
    """InvalidOperand (a sum beyond the float range): failed after one send, with its message."""
    drainers.only(drainers.prefork)
    [op] = create_operations(bridge, [(1.7e308, 1.7e308)])
    queue(bridge, [op])
    wait_ops(pg, [op], state="failed")
    [row] = read_operations(bridge, [op])
    assert "overflow" in harness.readable(row["error_message"]), row
    [(state, attempts, error)] = sql(
        pg, "SELECT state, attempts, error_message FROM compute_bridge_call"
            " WHERE res_model = 'compute.operation' AND res_id = %s", (op,))
    assert (state, attempts) == ("failed", 1), (state, attempts, error)
    harness.measure("background: refused operand", "failed after %d send: %s" % (attempts, error))


def call_later_action(client, calls):
    """A server action queuing slow.method(a, b) for each (a, b) of ``calls`` (sudo: addon
    code's way, past the "Call Any Service" group; the allow-list still applies)."""
    return server_action(client, "faults: call_later slow", (
        "for a, b in %r:\n"
        "    env['compute.bridge'].sudo().call_later('slow', 'method', args=(a, b))\n" % calls))


def test_transient_failure_retried_then_failed_then_requeued(drainers, bridge, fleet, pg):
    """slow.method answers after 3 s with a 1 s timeout: sent max_attempts (2) times with
    backoff, then failed; Requeue with a longer timeout: done. Cancel: a queued call never
    sent."""
    drainers.only(drainers.prefork)
    slow = fleet.start_slow_service(3)
    try:
        bridge.call("ir.config_parameter", "set_param", "compute_bridge.allowed_methods",
                    ALLOW_SLOW)
        bridge.call("ir.config_parameter", "set_param", "compute_bridge.max_attempts", "2")
        set_bridge_params(bridge, timeout=1)
        a, b = 80_400_000, 0.5
        [op] = create_operations(bridge, [(1, 1)])  # only for the action's context
        started = time.monotonic()
        run_action(bridge, call_later_action(bridge, [(a, b)]), [op])
        where = "service = 'slow' AND args_json LIKE %s"
        like = ("%%%d%%" % a,)
        harness.wait_until(lambda: call_states(pg, where, like) == {"failed": 1}, DRAIN_TIMEOUT,
                           interval=STATE_POLL, what="the slow call failed")
        failed_in = time.monotonic() - started
        [(call_id, attempts, error)] = sql(
            pg, "SELECT id, attempts, error_message FROM compute_bridge_call WHERE " + where,
            like)
        assert attempts == 2, (attempts, error)
        harness.readable(error)
        sends = slow.log().count("slow-method %r + %r" % (a, b))
        assert sends == 2, "the service saw %d sends, not 2" % sends

        set_bridge_params(bridge, timeout=10)
        bridge.call(CALL, "action_requeue", [call_id])
        harness.wait_until(lambda: call_states(pg, where, like) == {"done": 1}, DRAIN_TIMEOUT,
                           interval=STATE_POLL, what="the requeued call done")
        [(result,)] = sql(pg, "SELECT result_json FROM compute_bridge_call WHERE id = %s",
                          (call_id,))
        assert float(result) == a + b, result
        harness.measure("background: transient failure", "2 sends with backoff then failed in "
                        "%.1f s (%s); requeued: done, result %s" % (failed_in, error, result))
    finally:
        fleet.stop(slow)


def test_slow_service_paced_to_its_answers(drainers, bridge, fleet, pg):
    """slow.method answers 10 calls a second (1 s each, 10 service workers): 100 background
    calls sent in one chunk would take 10 s, over three times the 3 s RPC timeout, and the
    unanswered ones would wait behind stale requests when sent again. With 2 attempts only,
    all 100 are done, none failed: the runner sends the service what it answered within one
    deadline, and nothing while its queue still holds the unanswered requests."""
    drainers.only(drainers.prefork)
    slow = fleet.start_slow_service(1)
    base = 80_900_000
    where, like = "service = 'slow' AND args_json LIKE %s", ("[%d%%" % (base // 100_000),)
    try:
        bridge.call("ir.config_parameter", "set_param", "compute_bridge.allowed_methods",
                    ALLOW_SLOW)
        bridge.call("ir.config_parameter", "set_param", "compute_bridge.max_attempts", "2")
        set_bridge_params(bridge, timeout=3)
        [op] = create_operations(bridge, [(1, 1)])  # only for the action's context
        pairs = [(base + i, 0.5) for i in range(100)]
        run_action(bridge, call_later_action(bridge, pairs), [op])
        harness.wait_until(
            lambda: not set(call_states(pg, where, like)) & set(QUEUED_STATES), DRAIN_TIMEOUT,
            interval=STATE_POLL, what="the 100 slow calls ended")
        assert call_states(pg, where, like) == {"done": 100}, call_states(pg, where, like)
        rows = sql(pg, "SELECT args_json, result_json, attempts FROM compute_bridge_call WHERE "
                       + where, like)
        wrong = [(args, result) for args, result, _attempts in rows
                 if float(result) != sum(json.loads(args))]
        assert not wrong, wrong[:5]
        attempts = collections.Counter(attempts for _args, _result, attempts in rows)
        harness.measure("background: slow service paced", "100 calls to a 10-a-second service "
                        "with a 3 s timeout: all done, attempts %s" % dict(attempts))
    finally:
        fleet.stop(slow)


def test_cancel_a_queued_call_sends_nothing(drainers, bridge, fleet, pg):
    """No server drains: a queued call is cancelled; servers back, a later call is done and the
    cancelled one was never sent."""
    drainers.only()
    fleet.ensure(1)
    base = 80_500_000
    ops = create_operations(bridge, [(base, 0.5), (base + 1, 0.5)])
    queue(bridge, [ops[0]])
    [call_id] = sql(pg, "SELECT id FROM compute_bridge_call WHERE res_id = %s"
                        " AND res_model = 'compute.operation'", (ops[0],))[0]
    bridge.call(CALL, "action_cancel", [call_id])
    drainers.only(drainers.prefork)
    queue(bridge, [ops[1]])
    wait_ops(pg, [ops[1]])
    assert calls_of_ops(pg, [ops[0]]) == {"cancelled": 1}
    assert sums_seen(fleet, base + 0.5) == 0
    [(attempts,)] = sql(pg, "SELECT attempts FROM compute_bridge_call WHERE id = %s", (call_id,))
    assert attempts == 0


def test_kill_9_with_1000_in_flight(drainers, bridge, fleet, pg):
    """SIGKILL to the draining server's whole process group mid-drain, then a restart: all
    1,000 done with their sums, each applied by one transaction; sends reclaimed from the dead
    server's lease counted in ``attempts``."""
    drainers.only(drainers.prefork)
    fleet.stop_all()
    [service] = fleet.start_many(1, delay=0.05)
    pairs = [(80_600_000 + i, 0.125) for i in range(1000)]
    ops = create_operations(bridge, pairs)
    queue(bridge, ops)
    harness.wait_until(lambda: service.computed() >= 50 and calls_of_ops(pg, ops).get("sent"),
                       DRAIN_TIMEOUT, interval=0.1, what="calls in flight")
    drainers.prefork.kill()
    at_kill = calls_of_ops(pg, ops)
    computed_at_kill = service.computed()
    assert at_kill.get("done", 0) < 1000, at_kill
    started = time.monotonic()
    drainers.only(drainers.prefork)  # its log starts afresh
    wait_ops(pg, ops, timeout=DRAIN_TIMEOUT * 2)
    elapsed = time.monotonic() - started
    assert_right_once(pg, bridge, ops, pairs)
    # woken once its cron workers listen, not at their first poll a minute later
    assert "calls waiting as the server starts: runner woken" in drainers.prefork.log()
    resent = sql(pg, "SELECT count(*) FROM compute_bridge_call WHERE res_id = ANY(%s)"
                     " AND res_model = 'compute.operation' AND attempts > 1", (ops,))[0][0]
    assert resent >= 1 or not at_kill.get("sent"), "no in-flight call was sent again"
    harness.measure("background: kill -9", "at the kill %s, the service had computed %d; after "
                    "the restart all 1000 done in %.1f s, each applied once, %d sent again, "
                    "service calls in all %d" % (at_kill, computed_at_kill, elapsed, resent,
                                                 service.computed()))
    fleet.stop_all()


RUNNER_JOB = "Job 'Compute Bridge: run background calls'"  # ir.cron's line after each run
WAVES = 8  # each wave's commit wakes both servers' cron: whichever is free takes the job
WAVE_SIZE = 75
# Then one commit of several runner chunks (CHUNK_SIZE, 200): both servers' runner jobs take
# chunks of it at the same time.
LAST_WAVE_SIZE = 1000


def runner_runs(server):
    return server.log().count(RUNNER_JOB)


@pytest.fixture(scope="module")
def two_servers_drained(drainers, odoo, broker, fleet, pg):
    """Both servers running, 600 operations queued in waves and drained: what each applied
    (from the trigger's application_name) and how often each ran the runner (its log)."""
    bridge = odoo.xmlrpc()
    set_bridge_params(bridge, broker.uri(), RPC_TIMEOUT)
    drainers.only(drainers.prefork, drainers.threaded)
    fleet.stop_all()
    fleet.start_many(1, delay=0.01)
    pairs = [(80_700_000 + i, 0.375) for i in range(WAVES * WAVE_SIZE + LAST_WAVE_SIZE)]
    ops = create_operations(bridge, pairs)
    started = time.monotonic()
    for wave in range(WAVES):
        ids = ops[wave * WAVE_SIZE:(wave + 1) * WAVE_SIZE]
        queue(bridge, ids)
        wait_ops(pg, ids)
    last = ops[WAVES * WAVE_SIZE:]
    queue(bridge, last)
    wait_ops(pg, last)
    elapsed = time.monotonic() - started
    by_app = dict(sql(pg, "SELECT split_part(app, '-', 3), count(DISTINCT op_id)"
                          " FROM faults_applied WHERE op_id = ANY(%s) GROUP BY 1", (ops,)))
    runs = {server.name: runner_runs(server) for server in drainers.all}
    harness.measure("background: two servers", "%d in %d waves done in %.1f s; operations "
                    "applied by %s; runner runs in their logs %s" % (
                        len(ops), WAVES + 1, elapsed, by_app, runs))
    fleet.stop_all()
    return {"ops": ops, "pairs": pairs, "by_app": by_app, "runs": runs}


def test_two_servers_drain_one_queue_none_applied_twice(two_servers_drained, admin, pg):
    """Two Odoo processes on one database, both woken by each queuing commit: every call
    done with its sum, none applied twice."""
    drained = two_servers_drained
    assert_right_once(pg, admin, drained["ops"], drained["pairs"])
    assert all(drained["runs"].values()), drained["runs"]


def test_two_servers_both_apply_some(two_servers_drained):
    """Both servers take part: the runner is two cron jobs, so a server busy with one chunk
    does not keep the other from the next."""
    assert set(two_servers_drained["by_app"]) == {"prefork", "threaded"}, \
        two_servers_drained["by_app"]


def latencies(server, op):
    """Seconds of SAMPLES no-op reads and SAMPLES synchronous Suma clicks on ``server``."""
    client = server.xmlrpc(timeout=RPC_TIMEOUT * 10)
    reads, clicks = [], []
    for _i in range(SAMPLES):
        started = time.monotonic()
        client.call("res.users", "read", [client.uid], fields=["id"])
        reads.append(time.monotonic() - started)
        started = time.monotonic()
        kind, message = notification(click(client, [op]))
        clicks.append(time.monotonic() - started)
        assert kind == "success", message
    return reads, clicks


def test_no_worker_held(drainers, bridge, fleet, pg):
    """1,000 background calls waiting on a 2 s-per-call service: a no-op read and a
    synchronous Suma (its own RPC timeout: 3 s) on either server answer, as when idle."""
    drainers.only(drainers.prefork, drainers.threaded)
    fleet.ensure(1)
    slow = fleet.start_slow_service(2)
    where = "service = 'slow' AND state IN ('queued', 'sent', 'failed')"
    try:
        bridge.call("ir.config_parameter", "set_param", "compute_bridge.allowed_methods",
                    ALLOW_SLOW)
        [op] = create_operations(bridge, [(80_800_000, 0.5)])
        idle = {server.name: latencies(server, op) for server in drainers.all}
        run_action(bridge, call_later_action(bridge, [(i, 0.5) for i in range(1000)]), [op])
        harness.wait_until(lambda: slow.log().count("slow-method") >= 5, DRAIN_TIMEOUT,
                           what="the slow service busy with background calls")
        loaded = {server.name: latencies(server, op) for server in drainers.all}
        waiting = call_states(pg, "service = 'slow'", ())
        report = []
        for name in idle:
            (idle_reads, idle_clicks), (reads, clicks) = idle[name], loaded[name]
            report.append("%s: read %.0f -> %.0f ms, Suma %.0f -> %.0f ms (max %.0f)" % (
                name, 1000 * statistics.median(idle_reads), 1000 * statistics.median(reads),
                1000 * statistics.median(idle_clicks), 1000 * statistics.median(clicks),
                1000 * max(reads + clicks)))
            assert max(reads + clicks) < INTERACTIVE_BOUND, report
        harness.measure("background: no worker held", "median idle -> with 1000 waiting (%s): "
                        "%s" % (waiting, "; ".join(report)))
    finally:
        fleet.stop(slow)
        # what is left of the 1,000 must not run on in later tests
        with contextlib.suppress(TimeoutError):
            harness.wait_until(
                lambda: sql(pg, "UPDATE compute_bridge_call SET state = 'cancelled' WHERE "
                                + where + " RETURNING id") == [] and not call_states(
                    pg, "service = 'slow' AND state = 'sent'", ()),
                DRAIN_TIMEOUT, interval=1, what="the slow calls cancelled")

"""Background calls (compute.bridge.call_later and the runner cron) against the real broker
and compute service, in the test's transaction: the runner's commits are flushes here (the
faults layer runs it in real Odoo servers)."""

import doctest
import json
import math
import os
import select
import threading
import time
import uuid
import weakref
from datetime import timedelta
from unittest.mock import patch

import psycopg2

from odoo import fields, sql_db
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.service import server as odoo_server
from odoo.tests import new_test_user
from odoo.tools import config, mute_logger

from .. import telemetry
from ..models import compute_bridge_call, cron_notify
from ..models.compute_bridge_call import CHUNK_SIZE, ComputeBridgeCall
from ..rpc import RPC_TIMEOUT_PARAM, background
from ..rpc.background import ALLOWED_METHODS_PARAM, MAX_ATTEMPTS_PARAM, retry_delay
from ..rpc.telemetry import TRACEPARENT_HEADER
from .common import BROKER_URL, ComputeBridgeCase
from .test_rpc_live import rpc_queue

ANY_SERVICE_GROUP = "compute_bridge.group_compute_bridge_any_service"
RUNNER_CRON = "compute_bridge.ir_cron_compute_bridge_run_calls"
SHORT_TIMEOUT = 0.2  # seconds: the queue without a consumer answers nothing
CALLS_ENDED = compute_bridge_call.BUS_CALLS_ENDED


def flush_instead_of_commit(model):
    model.env.flush_all()


class BackgroundCase(ComputeBridgeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.startClassPatcher(patch.object(ComputeBridgeCall, "_commit", flush_instead_of_commit))
        cls.startClassPatcher(patch.object(compute_bridge_call.time, "sleep", lambda seconds: None))
        cls.Call = cls.env["compute.bridge.call"]
        cls.Bridge = cls.env["compute.bridge"]
        cls.cron = cls.env.ref(RUNNER_CRON)

    def setUp(self):
        super().setUp()
        # calls another run left in the database (rolled back with the test)
        self.Call.sudo().search([]).unlink()
        # this process's pace of each service.method, which another test may have changed
        compute_bridge_call._PACE.clear()
        # each test's runs are new runs of the job (the tests of a class share one cursor)
        compute_bridge_call._JOB_RUN.__dict__.clear()
        self.addCleanup(compute_bridge_call._PACE.clear)

    def run_runner(self):
        """One run of the cron's action, as the cron (superuser) runs it."""
        self.Call.sudo()._cron_run_calls()
        self.env.invalidate_all()

    def drain(self):
        for _run in range(20):
            self.run_runner()
            if not self.Call.sudo().search_count([("state", "=", "queued")]):
                return
        self.fail("calls still queued after 20 runs")

    def queue(self, *args, **kwargs):
        return self.Bridge.sudo().call_later("compute", "method", args=args, **kwargs)

    def triggers(self):
        return self.env["ir.cron.trigger"].sudo().search([("cron_id", "=", self.cron.id)])

    def bus_messages(self, kind):
        return [json.loads(values["message"])
                for values in self.env.cr.precommit.data.get("bus.bus.values", [])
                if json.loads(values["message"])["type"] == kind]


class TestBridgeApi(BackgroundCase):
    def test_pure_helpers_doctests(self):
        self.assertEqual(doctest.testmod(background).failed, 0)

    def test_call_is_the_synchronous_path(self):
        self.assertEqual(self.Bridge.sudo().call("compute", "method", 20, 22), 42)

    def test_allow_list_applies_to_sudo(self):
        self.env["ir.config_parameter"].sudo().set_param(ALLOWED_METHODS_PARAM, "other.method")
        with self.assertRaisesRegex(UserError, "compute.method.*Allowed Methods"):
            self.Bridge.sudo().call("compute", "method", 1, 1)
        with self.assertRaisesRegex(UserError, "compute.method"):
            self.queue(1, 1)
        operation = self.new_operation(1, 1)
        with self.assertRaisesRegex(UserError, "Allowed Methods"):
            operation.action_suma_queue()
        self.assertFalse(self.Call.sudo().search([]))

    def test_group_needed_without_sudo(self):
        bridge = self.Bridge.with_user(self.user)
        with self.assertRaisesRegex(AccessError, "compute.method.*Call Any Service"):
            bridge.call("compute", "method", 1, 1)
        with self.assertRaisesRegex(AccessError, "Call Any Service"):
            bridge.call_later("compute", "method", args=(1, 1))
        caller = new_test_user(self.env, "cb_caller", groups="base.group_user," + ANY_SERVICE_GROUP)
        self.assertEqual(self.Bridge.with_user(caller).call("compute", "method", 1, 1), 2)
        call = self.Bridge.with_user(caller).call_later("compute", "method", args=(1, 1))
        self.assertEqual(call.user_id, caller)

    def test_arguments_must_be_json(self):
        for args in ((object(),), (math.nan, 1), (1, {1, 2})):
            with self.subTest(args=args), self.assertRaisesRegex(ValidationError, "JSON"):
                self.queue(*args)
        with self.assertRaisesRegex(ValidationError, "JSON"):
            self.Bridge.sudo().call_later("compute", "method", kwargs={"a": object()})
        self.assertFalse(self.Call.sudo().search([]))

    def test_record_must_be_a_record_with_the_callback(self):
        with self.assertRaisesRegex(ValidationError, "one record"):
            self.queue(1, 1, record=42, callback="_on_background_sum")
        with self.assertRaisesRegex(ValidationError, "no method"):
            self.queue(1, 1, record=self.new_operation(1, 1), callback="_no_such_method")

    def test_rollback_leaves_no_call_and_no_trigger(self):
        self.triggers().unlink()
        with self.assertRaises(ValueError), self.env.cr.savepoint():
            self.queue(1, 1)
            self.assertEqual(len(self.triggers()), 1)
            raise ValueError("the transaction rolls back")
        self.env.invalidate_all()
        self.assertFalse(self.Call.sudo().search([]))
        self.assertFalse(self.triggers())
        # queued again after the rollback: the trigger is created again, once per transaction
        self.queue(1, 1)
        self.queue(2, 2)
        self.assertEqual(len(self.triggers()), 1)


class TestRunner(BackgroundCase):
    def test_queued_operations_are_done_with_the_right_sums(self):
        operations = self.new_operation(1, 2) | self.new_operation(40, 2) | self.new_operation(
            0.1, 0.2)
        action = operations.with_user(self.user).action_suma_queue()
        self.assertEqual(action["params"]["type"], "info")
        self.assertEqual(operations.mapped("state"), ["queued"] * 3)
        calls = operations.bridge_call_id
        self.assertEqual(len(calls), 3)
        self.assertEqual(set(calls.mapped("user_id")), {self.user})
        self.assertEqual(len(set(calls.mapped("batch"))), 1)
        self.run_runner()
        self.assertRecordValues(operations, [
            {"state": "done", "result": 3.0, "attempts": 1, "computed_by": self.user.id},
            {"state": "done", "result": 42.0, "attempts": 1, "computed_by": self.user.id},
            {"state": "done", "result": 0.1 + 0.2, "attempts": 1, "computed_by": self.user.id},
        ])
        self.assertEqual(calls.mapped("state"), ["done"] * 3)
        ended = self.bus_messages(CALLS_ENDED)
        self.assertEqual(len(ended), 1)
        self.assertEqual(sorted(ended[0]["payload"]["ids"]), sorted(operations.ids))
        batch = self.bus_messages("simple_notification")
        self.assertEqual(len(batch), 1)
        self.assertIn("3 background calls done", batch[0]["payload"]["message"])

    def test_a_chunks_callbacks_read_their_records_together(self):
        """The callbacks of a chunk read their records in one go: as many queries for 30
        calls as for 5 (a runner stores hundreds at a time)."""
        def queries_for(count):
            operations = self.Operation.create(
                [{"field_1": i, "field_2": 1} for i in range(count)])
            operations.action_suma_queue()
            call_ids = operations.bridge_call_id.ids
            self.env.flush_all()
            self.env.invalidate_all()  # nothing in the cache, as in a runner's transaction
            calls = self.Call.sudo().browse(call_ids)
            before = self.env.cr.sql_log_count
            calls._run_callbacks()
            self.env.flush_all()
            return self.env.cr.sql_log_count - before

        self.assertEqual(queries_for(30), queries_for(5))

    def test_a_user_gets_the_buttons_and_attempts(self):
        views = self.Operation.with_user(self.user).get_views([(False, "form"), (False, "list")])
        for view_type in ("form", "list"):
            arch = views["views"][view_type]["arch"]
            self.assertIn('name="action_suma_queue"', arch)
        self.assertIn('name="attempts"', views["views"]["form"]["arch"])

    def test_operation_shows_sent_while_its_call_is_out(self):
        operation = self.new_operation(1, 1)
        operation.action_suma_queue()
        claimed = self.Call.sudo()._claim(timedelta(seconds=60))
        self.assertEqual(claimed, [(operation.bridge_call_id.id, 1)])
        self.env.invalidate_all()
        self.assertEqual(operation.state, "sent")
        self.assertEqual(operation.attempts, 1)

    def test_operands_refused_while_queued_and_sync_suma_refused(self):
        operation = self.new_operation(1, 1)
        operation.action_suma_queue()
        with self.assertRaisesRegex(UserError, "call under way"):
            operation.with_user(self.user).write({"field_1": 5})
        with self.assertRaisesRegex(UserError, "call under way"):
            operation.with_user(self.user).action_suma()

    def test_server_action_compute_sums_in_background(self):
        operations = self.new_operation(1, 2) | self.new_operation(3, 4)
        server_action = self.env.ref(
            "compute_bridge.compute_operation_action_compute_sums_background")
        self.assertEqual(server_action.name, "Compute sums in background")
        server_action.with_user(self.user).with_context(
            active_model="compute.operation", active_ids=operations.ids).run()
        self.assertEqual(operations.mapped("state"), ["queued"] * 2)
        self.run_runner()
        self.assertEqual(operations.mapped("result"), [3.0, 7.0])

    def test_refused_operands_fail_at_once(self):
        call = self.queue("abc", 1)
        self.run_runner()
        self.assertRecordValues(call, [{"state": "failed", "attempts": 1}])
        self.assertIn("refused the operands", call.error_message)
        batch = self.bus_messages("simple_notification")
        self.assertEqual("0 of 1 background calls done, 1 failed, 0 cancelled.",
                         batch[0]["payload"]["message"])
        self.assertEqual(batch[0]["payload"]["type"], "warning")

    def test_no_answer_is_retried_with_backoff_then_failed(self):
        from kombu import Connection

        service = "cb_no_consumer_%s" % uuid.uuid4().hex[:8]
        config = self.env["ir.config_parameter"].sudo()
        config.set_param(ALLOWED_METHODS_PARAM, "compute.method %s.method" % service)
        config.set_param(MAX_ATTEMPTS_PARAM, 3)
        config.set_param(RPC_TIMEOUT_PARAM, SHORT_TIMEOUT)
        with Connection(BROKER_URL) as connection:
            channel = connection.default_channel
            bound = rpc_queue(service)(channel)
            bound.declare()
            # a consumer that takes the requests and never answers: a hung service
            channel.basic_consume(bound.name, callback=lambda message: None)
            try:
                self.retry_until_failed(service)
            finally:
                bound.delete()

    def test_stopped_service_queue_requeues_without_counting(self):
        """A stopped service leaves its queue: requests would wait there unanswered, so the
        runner asks for a consumer first and sends nothing while there is none."""
        from kombu import Connection

        service = "cb_stopped_%s" % uuid.uuid4().hex[:8]
        self.env["ir.config_parameter"].sudo().set_param(
            ALLOWED_METHODS_PARAM, "compute.method %s.method" % service)
        with Connection(BROKER_URL) as connection:
            bound = rpc_queue(service)(connection.default_channel)
            bound.declare()
            try:
                call = self.Bridge.sudo().call_later(service, "method", args=(1, 2))
                self.run_runner()
                self.assertRecordValues(call, [{"state": "queued", "attempts": 0}])
                self.assertIn("not running", call.error_message)
                self.assertEqual(bound.queue_declare(passive=True).message_count, 0)
            finally:
                bound.delete()

    def retry_until_failed(self, service):
        call = self.Bridge.sudo().call_later(service, "method", args=(1, 2))
        for attempt in (1, 2):
            before = fields.Datetime.now()
            self.run_runner()
            self.assertRecordValues(call, [{"state": "queued", "attempts": attempt}])
            self.assertIn("No reply", call.error_message)
            self.assertGreaterEqual(call.next_try,
                                    before + timedelta(seconds=retry_delay(attempt)))
            self.assertTrue(self.triggers().filtered(
                lambda trigger: trigger.call_at == call.next_try))
            self.run_runner()  # not due yet: nothing sent
            self.assertEqual(call.attempts, attempt)
            call.sudo().next_try = fields.Datetime.now()
        self.run_runner()
        self.assertRecordValues(call, [{"state": "failed", "attempts": 3}])

    def test_service_away_requeues_without_counting(self):
        service = "cb_not_running_%s" % uuid.uuid4().hex[:8]
        self.env["ir.config_parameter"].sudo().set_param(
            ALLOWED_METHODS_PARAM, "compute.method,%s.method" % service)
        call = self.Bridge.sudo().call_later(service, "method", args=(1, 2))
        self.run_runner()
        self.assertRecordValues(call, [{"state": "queued", "attempts": 0}])
        self.assertIn("not running", call.error_message)

    def test_result_applied_once(self):
        """Two runners sent the same call (the first one's lease expired): only the attempt
        the call is waiting for stores its result and calls back."""
        operation = self.new_operation(2, 3)
        operation.action_suma_queue()
        call = operation.bridge_call_id
        [(_id, first)] = self.Call.sudo()._claim(timedelta(seconds=60))
        call.sudo().sent_at = fields.Datetime.now() - timedelta(hours=1)  # the lease expired
        [(_id, second)] = self.Call.sudo()._claim(timedelta(seconds=60))
        self.assertEqual((first, second), (1, 2))
        results = [call.sudo()._result(attempt, 5, 5, None, 1.0) for attempt in (1, 2, 2)]
        calls_back = []
        real = type(operation)._on_background_sum

        def counting(record, bridge_call):
            calls_back.append(bridge_call.state)
            return real(record, bridge_call)

        with patch.object(type(operation), "_on_background_sum", counting):
            self.assertFalse(self.Call.sudo()._store(results[:1]))  # the late first runner
            self.assertEqual(self.Call.sudo()._store(results[1:2]), call)
            self.assertFalse(self.Call.sudo()._store(results[2:]))  # the same reply again
        self.assertEqual(calls_back, ["done"])
        self.assertRecordValues(operation, [{"state": "done", "result": 5.0, "attempts": 2}])

    def test_a_failing_callback_fails_its_call_only(self):
        good, bad = self.new_operation(1, 1), self.new_operation(2, 2)
        (good | bad).action_suma_queue()
        real = type(good)._on_background_sum

        def failing_for_bad(record, bridge_call):
            if record == bad and bridge_call.state == "done":
                raise ValueError("cannot store this one")
            return real(record, bridge_call)

        with patch.object(type(good), "_on_background_sum", failing_for_bad), \
                mute_logger("odoo.addons.compute_bridge.models.compute_bridge_call"):
            self.run_runner()
        self.assertRecordValues(good, [{"state": "done", "result": 2.0}])
        self.assertEqual(bad.state, "sent")
        self.assertEqual(bad.bridge_call_id.state, "failed")
        self.assertIn("cannot store this one", bad.bridge_call_id.error_message)

    def test_expired_lease_is_claimed_again(self):
        call = self.queue(1, 1)
        self.assertTrue(self.Call.sudo()._claim(timedelta(seconds=60)))
        self.assertFalse(self.Call.sudo()._claim(timedelta(seconds=60)))  # under lease
        call.sudo().sent_at = fields.Datetime.now() - timedelta(seconds=61)
        self.run_runner()
        self.assertRecordValues(call, [{"state": "done", "attempts": 2, "result_json": "2"}])

    def test_long_queue_is_drained_in_chunks_with_progress(self):
        self.queue(1, 1)
        self.queue(2, 2)
        self.queue(3, 3)
        cron, progress = self.cron.sudo()._add_progress()
        with patch.object(compute_bridge_call, "CHUNK_SIZE", 2):
            self.Call.sudo().with_context(**cron.env.context)._cron_run_calls()
        self.assertRecordValues(progress, [{"done": 2, "remaining": 1}])
        self.assertGreaterEqual(CHUNK_SIZE, 200)

    def test_requeue_and_cancel(self):
        operation = self.new_operation(1, 1)
        operation.action_suma_queue()
        call = operation.bridge_call_id
        with self.assertRaises(AccessError):
            call.with_user(self.user).action_cancel()
        call.with_user(self.manager).action_cancel()
        self.assertEqual(call.state, "cancelled")
        self.assertRecordValues(operation, [{"state": "draft", "bridge_call_id": False}])
        self.run_runner()
        self.assertEqual(call.state, "cancelled")  # never sent
        failed = self.queue("abc", 1)
        self.run_runner()
        self.assertEqual(failed.state, "failed")
        failed.sudo().args_json = "[1, 1]"  # as if the cause had been fixed
        failed.with_user(self.manager).action_requeue()
        self.assertRecordValues(failed, [{"state": "queued", "attempts": 0}])
        self.run_runner()
        self.assertRecordValues(failed, [{"state": "done", "result_json": "2"}])

    def test_a_call_under_way_is_cancelled_before_it_is_deleted(self):
        operation = self.new_operation(1, 1)
        operation.action_suma_queue()
        call = operation.bridge_call_id
        with self.assertRaisesRegex(UserError, "cancel it before deleting it"):
            call.with_user(self.manager).unlink()
        call.with_user(self.manager).action_cancel()
        call.with_user(self.manager).unlink()
        self.assertRecordValues(operation, [{"state": "draft", "bridge_call_id": False}])
        # superuser code deleting one under way: cancelled first, its record released
        again = self.new_operation(2, 2)
        again.action_suma_queue()
        again.bridge_call_id.sudo().unlink()
        self.assertRecordValues(again, [{"state": "draft", "bridge_call_id": False}])

    def test_a_batch_ended_by_cancelling_is_told_with_what_happened(self):
        operations = self.new_operation(1, 1) | self.new_operation(2, 2)
        operations.action_suma_queue()
        calls = operations.bridge_call_id
        calls[0].with_user(self.manager).action_cancel()
        self.assertFalse(self.bus_messages("simple_notification"))  # one call still queued
        self.run_runner()  # the other one is done: the batch has ended
        [told] = self.bus_messages("simple_notification")
        self.assertEqual(told["payload"]["message"],
                         "1 of 2 background calls done, 0 failed, 1 cancelled.")
        others = self.new_operation(3, 3) | self.new_operation(4, 4)
        others.action_suma_queue()
        others.bridge_call_id.with_user(self.manager).action_cancel()  # all of it, by hand
        told = self.bus_messages("simple_notification")[-1]
        self.assertEqual(told["payload"]["message"],
                         "0 of 2 background calls done, 0 failed, 2 cancelled.")
        self.assertEqual(told["payload"]["type"], "info")

    def test_a_user_sees_only_own_calls(self):
        other = new_test_user(self.env, "cb_other", groups="base.group_user,"
                              "compute_bridge.group_compute_bridge_user")
        mine = self.new_operation(1, 1)
        theirs = self.new_operation(2, 2, user=other)
        mine.action_suma_queue()
        theirs.action_suma_queue()
        visible = self.Call.with_user(self.user).search([])
        self.assertEqual(visible, mine.bridge_call_id)
        with self.assertRaises(AccessError):
            theirs.bridge_call_id.with_user(self.user).read(["result_json"])
        with self.assertRaises(AccessError):
            self.Call.with_user(self.user).create({"service": "compute", "method": "method"})
        self.assertEqual(self.Call.with_user(self.manager).search_count([]), 2)

    def test_cleanup_deletes_old_ended_calls(self):
        old, recent, pending = self.queue(1, 1), self.queue(2, 2), self.queue(3, 3)
        (old | recent).sudo().write({"state": "done", "done_at": fields.Datetime.now()})
        old.sudo().done_at = fields.Datetime.now() - timedelta(days=8)
        self.Call.sudo()._cron_cleanup()
        self.assertFalse(old.exists())
        self.assertEqual((recent | pending).exists(), recent | pending)


class TestLongRuns(BackgroundCase):
    def test_a_run_past_its_budget_ends_and_wakes_a_new_one(self):
        # Odoo's real time limit kills a cron worker (or thread) whose run outlasts it: a run
        # of the job that has gone on long tells ir.cron it is done, and triggers the next
        for _number in range(CHUNK_SIZE + 1):
            self.queue(1, 2)
        progress = []
        compute_bridge_call._JOB_RUN.cursor = weakref.ref(self.env.cr)
        compute_bridge_call._JOB_RUN.started = time.monotonic() - 3600  # an hour into the run
        before = self.triggers()
        with patch.object(type(self.env["ir.cron"]), "_notify_progress",
                          lambda cron, **values: progress.append(values)):
            self.run_runner()
        self.assertEqual(progress, [{"done": CHUNK_SIZE, "remaining": 0}])
        self.assertTrue(self.triggers() - before)
        self.assertEqual(self.Call.sudo().search_count([("state", "=", "queued")]), 1)

    def test_the_budget_fits_both_jobs_under_odoo_limit(self):
        budget = compute_bridge_call._run_budget
        with patch.dict(config.options, limit_time_real_cron=-1, limit_time_real=120):
            self.assertEqual(budget(15), 35)  # 2 jobs x (35 + one 15 s chunk + 10) = 120
        with patch.dict(config.options, limit_time_real_cron=600, limit_time_real=120):
            self.assertEqual(budget(15), compute_bridge_call.MAX_RUN_BUDGET)
        with patch.dict(config.options, limit_time_real_cron=0, limit_time_real=0):
            self.assertEqual(budget(15), compute_bridge_call.MAX_RUN_BUDGET)
        with patch.dict(config.options, limit_time_real_cron=-1, limit_time_real=120), \
                self.assertLogs(compute_bridge_call.__name__, "WARNING") as logs:
            self.assertEqual(budget(60), compute_bridge_call.MIN_RUN_BUDGET)
        self.assertIn("--limit-time-real-cron above 144", logs.output[0])

    def test_each_service_method_of_a_chunk_has_its_own_lease(self):
        # a chunk sends its service.methods one after another: the later ones' leases start
        # when they are sent, and the earlier ones' outcomes are stored before
        self.env["ir.config_parameter"].sudo().set_param(
            ALLOWED_METHODS_PARAM, "compute.method cb_second.method")
        first = self.queue(1, 2)
        second = self.Bridge.sudo().call_later("cb_second", "method", args=(3, 4))
        seen = {}
        send_group = ComputeBridgeCall._send_group

        def slow_first_group(calls, config):
            if calls[0].service == "compute":
                # as if this group took an hour: the second one's claim is that old when sent
                self.env.cr.execute("UPDATE compute_bridge_call SET sent_at = sent_at - "
                                    "interval '1 hour' WHERE id = %s", (second.id,))
            else:
                (first | second).invalidate_recordset()
                seen.update(first_state=first.state, second_sent_at=second.sent_at)
            return send_group(calls, config)

        with patch.object(ComputeBridgeCall, "_send_group", slow_first_group):
            self.run_runner()
        self.assertEqual(seen["first_state"], "done")
        self.assertLess(fields.Datetime.now() - seen["second_sent_at"], timedelta(minutes=1))


class TestWholeSeconds(BackgroundCase):
    def test_times_to_send_again_are_whole_seconds(self):
        # The runner finds a call due by comparing with Odoo's clock, which has whole seconds:
        # a time with a fraction stayed ahead of it when the runner woke up to send the call.
        call = self.queue(1, 2)
        self.env.cr.execute("UPDATE compute_bridge_call SET queued_at = %s WHERE id = %s",
                            (fields.Datetime.now() - timedelta(seconds=47), call.id))
        call.invalidate_recordset()
        requeued = call._error_result(1, 5, background.REQUEUE, "not running")  # 4.7 s later
        self.assertEqual(requeued["vals"]["next_try"].microsecond, 0)
        resume_at = self.Call._pace_after("cb_paced", "method", 10, 3, 1.0, 1.0)  # 2.33 s
        self.assertIsNotNone(resume_at)
        self.assertEqual(resume_at.microsecond, 0)
        self.assertEqual(doctest.testmod(compute_bridge_call).failed, 0)


class TestTraceOfTheClick(BackgroundCase):
    def test_a_background_call_goes_in_the_trace_of_the_request_that_queued_it(self):
        from kombu import Connection, Consumer

        service = "cb_traced_%s" % uuid.uuid4().hex[:8]
        self.env["ir.config_parameter"].sudo().set_param(
            ALLOWED_METHODS_PARAM, "compute.method %s.method" % service)
        self.env["ir.config_parameter"].sudo().set_param(RPC_TIMEOUT_PARAM, SHORT_TIMEOUT)
        trace_id = uuid.uuid4().hex
        click = {"traceparent": "00-%s-%s-01" % (trace_id, uuid.uuid4().hex[:16])}
        headers = []
        with Connection(BROKER_URL) as connection:
            queue = rpc_queue(service)(connection.default_channel)
            queue.declare()
            try:
                # a service that takes the request and never answers: what it was sent is kept
                with Consumer(connection.channel(), [queue], accept=["json"],
                              callbacks=[lambda body, message: headers.append(message.headers)]):
                    with telemetry.request_span("POST /web/dataset/call_button", click):
                        call = self.Bridge.sudo().call_later(service, "method", args=(1, 2))
                    untraced = self.Bridge.sudo().call_later(service, "method", args=(3, 4))
                    self.run_runner()
                    while len(headers) < 2:
                        connection.drain_events(timeout=5)
            finally:
                queue.delete()
        self.assertEqual(call.traceparent.split("-")[1], trace_id)
        self.assertFalse(untraced.traceparent)
        sent = sorted(header.get(TRACEPARENT_HEADER, "") for header in headers)
        self.assertEqual([value.split("-")[1] if value else "" for value in sent].count(trace_id),
                         1, sent)


class TestCronNotify(BackgroundCase):
    """The NOTIFY that wakes Odoo's cron threads, over the kept connection of cron_notify."""

    def listen(self):
        """A connection LISTENing where Odoo's cron threads do."""
        _dbname, connection_info = sql_db.connection_info_for(cron_notify.LISTEN_DATABASE)
        listener = psycopg2.connect(**connection_info)
        self.addCleanup(listener.close)
        listener.autocommit = True
        listener.cursor().execute("LISTEN %s" % cron_notify.CRON_CHANNEL)
        return listener

    def heard(self, listener, count):
        """(backend pid, payload) of the next ``count`` notifications."""
        while len(listener.notifies) < count:
            self.assertTrue(select.select([listener], [], [], 10)[0], "no NOTIFY heard")
            listener.poll()
        heard = [(notify.pid, notify.payload) for notify in listener.notifies[:count]]
        del listener.notifies[:count]
        return heard

    def test_wakes_go_over_one_kept_connection(self):
        listener = self.listen()
        cron_notify.notify_cron_threads("cb_first")
        cron_notify.notify_cron_threads("cb_second")
        (pid_1, first), (pid_2, second) = self.heard(listener, 2)
        self.assertEqual((first, second), ("cb_first", "cb_second"))
        self.assertEqual(pid_1, pid_2)

    def test_a_connection_the_server_closed_is_made_again(self):
        listener = self.listen()
        cron_notify.notify_cron_threads("cb_before")
        [(kept_pid, _payload)] = self.heard(listener, 1)
        listener.cursor().execute("SELECT pg_terminate_backend(%s)", (kept_pid,))
        cron_notify.notify_cron_threads("cb_after")
        [(pid, payload)] = self.heard(listener, 1)
        self.assertEqual(payload, "cb_after")
        self.assertNotEqual(pid, kept_pid)

    def test_a_forked_worker_notifies_over_its_own_connection(self):
        listener = self.listen()
        cron_notify.notify_cron_threads("cb_parent")
        [(parent_pid, _payload)] = self.heard(listener, 1)
        child = os.fork()
        if child == 0:  # a prefork worker, forked from a master that has woken a runner
            try:
                cron_notify.notify_cron_threads("cb_child")
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        cron_notify.notify_cron_threads("cb_parent")
        heard = dict((payload, pid) for pid, payload in self.heard(listener, 2))
        self.assertNotEqual(heard["cb_child"], parent_pid)
        self.assertEqual(heard["cb_parent"], parent_pid)

    def test_waking_the_runner_notifies_once_after_the_commit(self):
        with patch.object(cron_notify, "notify_cron_threads") as notify, \
                patch.object(type(self.env["ir.cron"]), "_notifydb") as odoo_notify:
            before = self.triggers()
            self.Call._wake_runners()
            self.Call._wake_runners()
            self.assertEqual(len(self.triggers() - before), 2)
            notify.assert_not_called()
            self.env.cr.postcommit.run()
        notify.assert_called_once_with(self.env.cr.dbname)
        odoo_notify.assert_not_called()

    def test_a_later_wake_waits_for_the_cron_poll(self):
        later = fields.Datetime.now() + timedelta(minutes=5)
        with patch.object(cron_notify, "notify_cron_threads") as notify:
            before = self.triggers()
            self.Call._wake_runners(later)
            self.env.cr.postcommit.run()
        notify.assert_not_called()
        self.assertEqual((self.triggers() - before).mapped("call_at"), [later])


class TestWakeAtStart(BackgroundCase):
    def register_hook_with_a_server(self):
        """Run the registry hook as a server's start would, but not under test_enable (test
        runners such as pytest-odoo load the registry without it); return the wakes planned."""
        with patch.dict(config.options, test_enable=False, stop_after_init=False,
                        max_cron_threads=2), \
                patch.object(odoo_server, "server", object()), \
                patch.object(compute_bridge_call, "_wake_later") as wake_later:
            self.Call._register_hook()
        return wake_later.call_args_list

    def test_a_server_wakes_its_runner_at_start(self):
        with patch.object(threading.current_thread(), "testing", False):
            self.assertEqual(len(self.register_hook_with_a_server()), 1)

    def test_no_wake_at_start_while_testing(self):
        # The wake's thread reads system parameters in a transaction of its own: while a test
        # runs, it would cache the committed values over the ones the test has set.
        self.assertTrue(getattr(threading.current_thread(), "testing", False))
        self.assertEqual(self.register_hook_with_a_server(), [])


class TestRunnerDefects(BackgroundCase):
    """What the runner and the buttons do with calls that cannot go as queued."""

    def allow(self, names):
        self.env["ir.config_parameter"].sudo().set_param(ALLOWED_METHODS_PARAM, names)

    def test_a_method_taken_off_the_allow_list_fails_its_calls_only(self):
        gone = "cb_gone_%s" % uuid.uuid4().hex[:8]
        self.allow("compute.method %s.method" % gone)
        operation = self.new_operation(1, 2)
        operation.action_suma_queue()
        refused = self.Bridge.sudo().call_later(gone, "method", args=(1, 2))
        self.allow("compute.method")
        self.run_runner()
        self.assertRecordValues(refused, [{"state": "failed", "attempts": 1}])
        self.assertIn("is not in the Allowed Methods", refused.error_message)
        self.assertRecordValues(operation, [{"state": "done", "result": 3.0}])

        again = self.new_operation(2, 2)
        again.action_suma_queue()
        self.allow(gone + ".method")  # compute.method itself taken off
        self.run_runner()
        self.assertRecordValues(again.bridge_call_id, [{"state": "failed", "attempts": 1}])
        self.assertRecordValues(again, [{"state": "failed"}])
        self.assertIn("compute.method is not in the Allowed Methods", again.error_message)

    def test_an_unexpected_error_in_a_send_is_a_counted_attempt(self):
        self.env["ir.config_parameter"].sudo().set_param(MAX_ATTEMPTS_PARAM, 2)
        operation = self.new_operation(1, 2)
        operation.action_suma_queue()
        call = operation.bridge_call_id

        def broken(*args, **kwargs):
            raise RuntimeError("unexpected in the send")

        bridge = type(self.env["compute.bridge"])
        with patch.object(bridge, "_call_many", broken), \
                mute_logger("odoo.addons.compute_bridge.models.compute_bridge_call"):
            self.run_runner()
            self.assertRecordValues(call, [{"state": "queued", "attempts": 1}])
            self.assertIn("unexpected in the send", call.error_message)
            call.sudo().next_try = fields.Datetime.now()
            self.run_runner()
        self.assertRecordValues(call, [{"state": "failed", "attempts": 2}])
        self.assertEqual(operation.state, "failed")

    def test_a_lease_run_out_after_the_last_attempt_fails_the_call(self):
        """Whatever keeps a runner from storing an outcome (it dies, it hangs) cannot keep a
        call ``sent`` and claimed again without bound."""
        self.env["ir.config_parameter"].sudo().set_param(MAX_ATTEMPTS_PARAM, 2)
        operation = self.new_operation(1, 2)
        operation.action_suma_queue()
        call = operation.bridge_call_id
        for attempt in (1, 2):
            [(_id, sent)] = self.Call.sudo()._claim(timedelta(seconds=60))
            self.assertEqual(sent, attempt)
            call.sudo().sent_at = fields.Datetime.now() - timedelta(hours=1)
        self.run_runner()
        self.assertRecordValues(call, [{"state": "failed", "attempts": 2}])
        self.assertIn("No outcome was stored", call.error_message)
        [told] = self.bus_messages("simple_notification")  # its batch has ended
        self.assertEqual(told["payload"]["message"],
                         "0 of 1 background calls done, 1 failed, 0 cancelled.")
        self.assertEqual(operation.state, "failed")

    def test_a_service_that_never_comes_up_is_stuck_and_backed_off(self):
        ghost = "cb_ghost_%s" % uuid.uuid4().hex[:8]
        self.allow("compute.method %s.method" % ghost)
        call = self.Bridge.sudo().call_later(ghost, "method", args=(1, 2))
        self.run_runner()
        self.assertRecordValues(call, [{"state": "queued", "attempts": 0, "is_stuck": False}])
        first_wait = (call.next_try - fields.Datetime.now()).total_seconds()
        self.assertLessEqual(first_wait, background.REQUEUE_DELAY)
        # waiting for ten minutes now
        self.env.cr.execute("UPDATE compute_bridge_call SET queued_at = queued_at - "
                            "interval '10 minutes', next_try = %s WHERE id = %s",
                            [fields.Datetime.now() - timedelta(seconds=1), call.id])
        self.env.invalidate_all()
        self.run_runner()
        self.assertRecordValues(call, [{"state": "queued", "attempts": 0, "is_stuck": True}])
        wait = (call.next_try - fields.Datetime.now()).total_seconds()
        self.assertGreater(wait, 10 * background.REQUEUE_DELAY)
        self.assertLessEqual(wait, compute_bridge_call.NOT_RUNNING_MAX_DELAY)
        self.assertEqual(self.Call.sudo().search([("is_stuck", "=", True)]), call)
        call.with_user(self.manager).action_requeue()  # waits from now again
        self.assertFalse(call.is_stuck)

    def test_requeue_and_cancel_refuse_calls_they_do_not_apply_to(self):
        operation = self.new_operation(1, 1)
        operation.action_suma_queue()
        call = operation.bridge_call_id
        self.run_runner()
        self.assertEqual(call.state, "done")
        for action in (call.with_user(self.manager).action_requeue,
                       call.with_user(self.manager).action_cancel):
            with self.assertRaisesRegex(UserError, "is Done: only"):
                action()
        self.assertEqual(call.state, "done")

        operation.write({"field_1": 2})
        operation.action_suma_queue()
        cancelled = operation.bridge_call_id
        cancelled.with_user(self.manager).action_cancel()
        with self.assertRaisesRegex(UserError, "no longer waits for it"):
            cancelled.with_user(self.manager).action_requeue()
        self.assertRecordValues(cancelled, [{"state": "cancelled"}])
        self.assertRecordValues(operation, [{"state": "draft", "bridge_call_id": False}])

        alone = self.queue(3, 3)
        alone.with_user(self.manager).action_cancel()
        alone.with_user(self.manager).action_requeue()  # no record: sent again
        self.run_runner()
        self.assertRecordValues(alone, [{"state": "done", "result_json": "6"}])

    def test_cleanup_survives_an_out_of_range_retention(self):
        call = self.queue(1, 1)
        call.sudo().write({"state": "done", "done_at": fields.Datetime.now()})
        self.env["ir.config_parameter"].sudo().set_param(
            background.RETENTION_DAYS_PARAM, "2147483647")
        self.Call.sudo()._cron_cleanup()
        self.assertTrue(call.exists())
        with self.assertRaisesRegex(ValidationError, "at most 36500 days"):
            self.env["res.config.settings"].create(
                {"compute_bridge_call_retention_days": 1000000}).execute()

    def test_a_service_slower_than_a_chunk_gets_smaller_chunks(self):
        """Of a chunk sent, the service answered 40 in the 4 s deadline: it is sent 20 at a
        time (CHUNK_SAFETY), and nothing until the 60 unanswered have left its queue; a chunk
        answered in full sizes the next one up."""
        Call = self.Call.sudo()
        resume_at = Call._pace_after("compute", "method", 100, 40, 4.0, 4.0)
        self.assertAlmostEqual((resume_at - fields.Datetime.now()).total_seconds(), 6, delta=1)
        self.assertEqual(Call._chunk_sizes(), [("compute", "method", 20)])
        for value in range(25):
            self.queue(value, 1)
        self.run_runner()
        self.assertEqual(Call.search_count([("state", "=", "done")]), 0)  # paused
        key = Call._pace_key("compute", "method")
        compute_bridge_call._PACE[key] = (20, fields.Datetime.now())  # the pause is over
        self.run_runner()
        self.assertEqual(Call.search_count([("state", "=", "done")]), 20)
        self.assertGreater(compute_bridge_call._PACE[key][0], 20)  # answered in full: grows
        self.run_runner()
        self.assertEqual(Call.search_count([("state", "=", "done")]), 25)

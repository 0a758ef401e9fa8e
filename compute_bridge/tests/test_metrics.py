"""GET /compute_bridge/metrics, the charts' statistics and the instances' rates, with the real
broker and services (the harness runs them)."""

import doctest
import json
import os
import re
import shutil
import tempfile
from unittest.mock import patch

from freezegun import freeze_time

from odoo.tests import HttpCase, TransactionCase, tagged

from .. import heartbeats, telemetry
from ..controllers import metrics as metrics_controller
from ..controllers.metrics import ROUTE, TOKEN_ENV_VAR, TOKEN_FILE_ENV_VAR, TOKEN_PARAM
from ..rpc import (
    BROKER_URL_ENV_VAR,
    BROKER_URL_PARAM,
    RPC_TIMEOUT_PARAM,
    BrokerUnreachable,
    ServiceTimeout,
    ServiceUnavailable,
    call,
    call_many,
)
from ..rpc.client import BATCH_CHUNK_SIZE
from .common import BROKER_URL, TEST_RPC_TIMEOUT

TOKEN = "metrics-test-token"
CALLS_OK = 'compute_bridge_calls_total{method="method",outcome="ok",service="compute"}'
FAILURES_UNAVAILABLE = ('compute_bridge_call_failures_total{kind="service_unavailable",'
                        'method="method",service="cb_no_such_service"}')
METRIC_LINE = re.compile(r"^(\w+(?:\{[^}]*\})?) (\S+)$", re.MULTILINE)


@tagged("post_install", "-at_install")
class TestMetricsEndpoint(HttpCase):
    def setUp(self):
        super().setUp()
        env_patch = patch.dict(os.environ)
        env_patch.start()
        self.addCleanup(env_patch.stop)
        os.environ.pop(TOKEN_ENV_VAR, None)
        os.environ.pop(TOKEN_FILE_ENV_VAR, None)
        os.environ.pop(BROKER_URL_ENV_VAR, None)
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(BROKER_URL_PARAM, BROKER_URL)
        params.set_param(RPC_TIMEOUT_PARAM, TEST_RPC_TIMEOUT)
        params.set_param(TOKEN_PARAM, False)

    def get(self, token=None, authorization=None):
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer %s" % token
        if authorization is not None:
            headers["Authorization"] = authorization
        return self.opener.get(self.base_url() + ROUTE, headers=headers, timeout=12)

    def scrape(self):
        response = self.get(TOKEN)
        self.assertEqual(response.status_code, 200, response.text)
        return {name: float(value) for name, value in METRIC_LINE.findall(response.text)}

    def test_no_token_configured_answers_404(self):
        self.assertEqual(self.get("anything").status_code, 404)
        # to every method: a 405 would tell that the route exists
        for method in ("POST", "PUT", "DELETE"):
            response = self.opener.request(method, self.base_url() + ROUTE, timeout=12)
            self.assertEqual(response.status_code, 404, method)

    def test_the_scheme_is_case_insensitive_and_other_methods_405(self):
        os.environ[TOKEN_ENV_VAR] = TOKEN
        for scheme in ("bearer", "BEARER", "Bearer"):
            response = self.get(authorization="%s %s" % (scheme, TOKEN))
            self.assertEqual(response.status_code, 200, scheme)
        response = self.opener.post(self.base_url() + ROUTE, timeout=12,
                                    headers={"Authorization": "Bearer %s" % TOKEN})
        self.assertEqual(response.status_code, 405)

    def test_missing_or_wrong_token_is_403_and_empty(self):
        self.env["ir.config_parameter"].sudo().set_param(TOKEN_PARAM, TOKEN)
        for token, authorization in ((None, None), ("wrong", None), (None, TOKEN),
                                     (None, "Basic %s" % TOKEN)):
            response = self.get(token, authorization)
            self.assertEqual((response.status_code, response.text), (403, ""))

    def test_environment_token_wins(self):
        self.env["ir.config_parameter"].sudo().set_param(TOKEN_PARAM, "from-database")
        os.environ[TOKEN_ENV_VAR] = TOKEN
        self.assertEqual(self.get("from-database").status_code, 403)
        self.assertEqual(self.get(TOKEN).status_code, 200)

    def test_the_token_may_come_from_a_file(self):
        self.env["ir.config_parameter"].sudo().set_param(TOKEN_PARAM, "from-database")
        with tempfile.NamedTemporaryFile("w", suffix=".token") as secret:
            secret.write(TOKEN + "\n")
            secret.flush()
            os.environ[TOKEN_FILE_ENV_VAR] = secret.name
            self.assertEqual(self.get("from-database").status_code, 403)
            self.assertEqual(self.get(TOKEN).status_code, 200)

    def test_calls_move_the_counters_by_exactly_what_was_done(self):
        os.environ[TOKEN_ENV_VAR] = TOKEN
        before = self.scrape()
        operations = self.env["compute.operation"].create(
            [{"field_1": number, "field_2": 1} for number in range(3)])
        operations.action_suma()
        self.assertEqual(set(operations.mapped("state")), {"done"})
        config = self.env["compute.bridge"]._config()
        with self.assertRaises(ServiceUnavailable):
            call(config, "cb_no_such_service", "method", 1, 2)
        after = self.scrape()
        self.assertEqual(after[CALLS_OK] - before.get(CALLS_OK, 0), 3)
        self.assertEqual(after[FAILURES_UNAVAILABLE] - before.get(FAILURES_UNAVAILABLE, 0), 1)
        self.assertIn('compute_bridge_service_instances{state="live"}', after)
        self.assertEqual(after['compute_bridge_pool_connections{state="in_use"}'], 0)
        self.assertIn("compute_bridge_background_oldest_queued_seconds", after)

    def test_a_batch_with_remote_errors_counts_each_request_once(self):
        os.environ[TOKEN_ENV_VAR] = TOKEN
        calls_failed = CALLS_OK.replace('"ok"', '"failed"')
        invalid = ('compute_bridge_call_failures_total{kind="invalid_operands",method="method",'
                   'service="compute"}')
        observed = 'compute_bridge_call_duration_seconds_count{method="method",service="compute"}'
        before = self.scrape()
        config = self.env["compute.bridge"]._config()
        outcomes = call_many(config, "compute", "method", [(1, 2), ("a", 1), (3, 4), (None, 5)])
        self.assertEqual([outcome.value for outcome in outcomes], [3, None, 7, None])
        after = self.scrape()
        moved = {name: after[name] - before.get(name, 0)
                 for name in (CALLS_OK, calls_failed, invalid, observed)}
        self.assertEqual(moved, {CALLS_OK: 2, calls_failed: 2, invalid: 2, observed: 4})

    def test_every_state_has_a_series_even_at_zero(self):
        os.environ[TOKEN_ENV_VAR] = TOKEN
        self.env["compute.operation"].search([("state", "=", "draft")]).unlink()
        self.env["compute.bridge.call"].sudo().search([("state", "=", "cancelled")]).unlink()
        after = self.scrape()
        self.assertEqual(after['compute_bridge_operations{state="draft"}'], 0)
        self.assertEqual(after['compute_bridge_background_calls{state="cancelled"}'], 0)
        for state in ("queued", "sent", "done", "failed"):
            self.assertIn('compute_bridge_background_calls{state="%s"}' % state, after)

    def test_background_requests_held_back_are_not_calls(self):
        # what the runner does each time it finds a service without a consumer: the calls
        # stay queued, so they are no failed calls (an alert on those would fire for nothing)
        os.environ[TOKEN_ENV_VAR] = TOKEN
        not_sent = ('compute_bridge_calls_not_sent_total{method="method",'
                    'service="cb_no_such_service"}')
        failed = ('compute_bridge_calls_total{method="method",outcome="failed",'
                  'service="cb_no_such_service"}')
        before = self.scrape()
        config = self.env["compute.bridge"]._config()
        for _poll in range(3):
            with self.assertRaises(ServiceUnavailable):
                call_many(config, "cb_no_such_service", "method", [(1, 2), (3, 4)],
                          require_consumer=True)
        after = self.scrape()
        self.assertEqual(after[not_sent] - before.get(not_sent, 0), 6)
        self.assertEqual(after.get(failed, 0) - before.get(failed, 0), 0)
        self.assertEqual(after.get(FAILURES_UNAVAILABLE, 0),
                         before.get(FAILURES_UNAVAILABLE, 0))
        self.assertEqual(after['compute_bridge_pool_connections{state="in_use"}'], 0)

    def test_background_requests_held_back_by_a_broker_outage_are_not_calls(self):
        # the runner tries its queued calls again every few seconds while the broker is away:
        # counted as failed calls, each pass over the backlog would add its size to the alerts
        os.environ[TOKEN_ENV_VAR] = TOKEN
        labels = 'method="method",service="cb_unreached_service"'
        not_sent = "compute_bridge_calls_not_sent_total{%s}" % labels
        failed = 'compute_bridge_calls_total{%s}' % labels.replace(
            'method="method"', 'method="method",outcome="failed"')
        unreachable = 'compute_bridge_call_failures_total{kind="broker_unreachable",%s}' % labels
        before = self.scrape()
        config = self.env["compute.bridge"]._config()._replace(
            broker_url="pyamqp://guest:guest@127.0.0.1:1", timeout=2.0)
        for _poll in range(3):
            with self.assertRaises(BrokerUnreachable):
                call_many(config, "cb_unreached_service", "method", [(1, 2), (3, 4)],
                          require_consumer=True)
        after = self.scrape()
        self.assertEqual(after[not_sent] - before.get(not_sent, 0), 6)
        self.assertEqual(after.get(failed, 0) - before.get(failed, 0), 0)
        self.assertEqual(after.get(unreachable, 0) - before.get(unreachable, 0), 0)
        # a call made now (a click) is a failed call all the same
        with self.assertRaises(BrokerUnreachable):
            call(config, "cb_unreached_service", "method", 1, 2)
        self.assertEqual(self.scrape()[unreachable] - before.get(unreachable, 0), 1)

    def test_requests_never_sent_add_no_latency(self):
        # at the deadline, the requests of a batch not yet published time out too; they were
        # never sent, so they have no latency to add to the histogram
        os.environ[TOKEN_ENV_VAR] = TOKEN
        observed = 'compute_bridge_call_duration_seconds_count{method="method",service="compute"}'
        timeouts = ('compute_bridge_call_failures_total{kind="timeout",method="method",'
                    'service="compute"}')
        config = self.env["compute.bridge"]._config()
        call(config, "compute", "method", 1, 2)  # a warm connection in the pool
        before = self.scrape()
        requests = [(number, 1) for number in range(5 * BATCH_CHUNK_SIZE)]
        outcomes = call_many(config._replace(timeout=0.02), "compute", "method", requests)
        after = self.scrape()
        timed_out = sum(isinstance(outcome.error, ServiceTimeout) for outcome in outcomes)
        self.assertGreater(timed_out, 3 * BATCH_CHUNK_SIZE)
        self.assertEqual(after[timeouts] - before.get(timeouts, 0), timed_out)
        self.assertLessEqual(after[observed] - before.get(observed, 0), BATCH_CHUNK_SIZE)

    def test_doctests(self):
        for module in (telemetry, metrics_controller):
            result = doctest.testmod(module)
            self.assertGreater(result.attempted, 0, module.__name__)
            self.assertEqual(result.failed, 0, module.__name__)

    def test_failure_kinds(self):
        from ..rpc.errors import BrokerUnreachable, RemoteFailure

        self.assertEqual(telemetry.failure_kind(BrokerUnreachable(broker="b", detail="d")),
                         "broker_unreachable")
        self.assertEqual(telemetry.failure_kind(RemoteFailure(
            service="s", method="m", exc_type="KeyError", detail="d")), "remote_error")
        self.assertEqual(telemetry.failure_kind(ValueError()), telemetry.OTHER_FAILURE)


@tagged("post_install", "-at_install")
class TestMetricsDirectories(TransactionCase):
    def test_only_the_dead_servers_of_this_namespace_lose_their_directory(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        # pid 1 runs here, started at another time: what another container's Odoo (pid 1 in its
        # own PID namespace) looks like from this one
        others = [os.path.join(root, "1-1000"), os.path.join(root, "other-host-1", "1-1000")]
        for path in others:
            os.makedirs(path)
        with open("/proc/sys/kernel/pid_max") as handle:
            no_such_pid = int(handle.read()) + 1
        with patch.dict(os.environ), patch.object(telemetry, "metrics_root", return_value=root):
            os.environ.pop(telemetry.MULTIPROC_ENV_VAR, None)
            mine = telemetry.prepare_metrics_dir()
            dead = os.path.join(os.path.dirname(mine), "%d-1" % no_such_pid)
            os.makedirs(dead)
            os.environ.pop(telemetry.MULTIPROC_ENV_VAR)  # the next start of this server
            self.assertEqual(telemetry.prepare_metrics_dir(), mine)
        for path in others:
            self.assertTrue(os.path.isdir(path), path)
        self.assertTrue(os.path.isdir(mine))
        self.assertFalse(os.path.exists(dead))


@tagged("post_install", "-at_install")
class TestCharts(HttpCase):
    def test_statistics_have_the_service_and_percentiles(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(BROKER_URL_PARAM, BROKER_URL)
        operations = self.env["compute.operation"].create(
            [{"field_1": number, "field_2": 1} for number in range(4)])
        with patch.dict(os.environ):
            os.environ.pop(BROKER_URL_ENV_VAR, None)
            operations.action_suma()
        self.assertEqual(set(operations.mapped("service")), {"compute"})
        durations = sorted(operations.mapped("duration"))
        self.env.flush_all()
        stats = self.env["compute.operation.stats"].search(
            [("service", "=", "compute"), ("state", "=", "done")])
        self.assertTrue(stats)
        self.assertGreaterEqual(sum(stats.mapped("count")), 4)
        for row in stats:
            self.assertLessEqual(row.duration_p50, row.duration_p99)
        self.assertGreaterEqual(max(stats.mapped("duration_p99")), durations[0])

    def test_merged_rows_show_the_mean_of_all_their_operations(self):
        # one slow failure and three quick successes: two rows (by state) of one day and service
        service = "cb_stats_weighted"
        durations = {"failed": [1000.0], "done": [100.0, 100.0, 100.0]}
        for state, values in durations.items():
            for duration in values:
                operation = self.env["compute.operation"].create({"field_1": 1, "field_2": 1})
                operation._write_bridge_fields({
                    "state": state, "duration": duration, "service": service,
                    "computed_on": "2025-01-01 12:00:00"})
        self.env.flush_all()
        Stats = self.env["compute.operation.stats"]
        [(average, p99)] = Stats._read_group([("service", "=", service)],
                                             aggregates=["duration_avg:avg", "duration_p99:max"])
        self.assertAlmostEqual(average, 325.0)  # not 550, the mean of the rows' means
        self.assertAlmostEqual(p99, 1000.0)  # the largest, an upper bound
        self.assertIn("upper bound", Stats._fields["duration_p99"].help)

    def test_operations_charts_show_the_mean_duration(self):
        service = "cb_mean_duration"
        for duration in (10.0, 30.0, 50.0):
            operation = self.env["compute.operation"].create({"field_1": 1, "field_2": 1})
            operation._write_bridge_fields({"state": "done", "duration": duration,
                                            "service": service})
        [group] = self.env["compute.operation"].read_group(
            [("service", "=", service)], ["duration"], [])
        self.assertAlmostEqual(group["duration"], 30.0)  # a pivot's default, not the sum 90

    def test_instances_show_calls_per_minute_and_by_service(self):
        Instance = self.env["compute.service.instance"]
        beat = {"instance_id": "metrics-test", "service": "heartbeat", "pid": 23175,
                "calls_served": 10, "interval": 30.0, "uptime": 100.0,
                "services": ["compute", "heartbeat", "notify"],
                "calls_by_service": {"compute": 10, "notify": 10, "heartbeat": 2}}
        with freeze_time("2025-01-01 12:00:00"):
            instance = Instance._record_heartbeat(heartbeats.parse_heartbeat(
                json.dumps(beat).encode()))
        self.assertEqual(instance.service_calls, "compute: 10, heartbeat: 2, notify: 10")
        self.assertEqual(instance.calls_per_minute, 0)  # the first beat: no rate yet
        beat.update(calls_served=40, uptime=130.0)
        with freeze_time("2025-01-01 12:00:30"):
            Instance._record_heartbeat(heartbeats.parse_heartbeat(json.dumps(beat).encode()))
        self.assertEqual(instance.calls_per_minute, 60.0)
        # 30 s of the instance's own time, but received 0.3 s after the previous beat (both
        # held up while Odoo was busy): the rate is the instance's, not the arrivals'
        beat.update(calls_served=340, uptime=160.0)
        with freeze_time("2025-01-01 12:00:30.300000"):
            Instance._record_heartbeat(heartbeats.parse_heartbeat(json.dumps(beat).encode()))
        self.assertEqual(instance.calls_per_minute, 600.0)

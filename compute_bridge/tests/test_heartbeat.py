import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from unittest.mock import patch

from odoo.tests import HttpCase, tagged

from odoo.addons.compute_bridge import heartbeats
from odoo.addons.compute_bridge.controllers.heartbeat import ROUTE
from odoo.addons.compute_bridge.models import compute_service_instance
from odoo.addons.compute_bridge.tests.common import let_other_threads_open_the_registry

SECRET = "test-heartbeat-secret"
BEAT = {
    "service": "heartbeat",
    "host": "worker-1",
    "pid": 4242,
    "instance_id": "0123456789abcdef",
    "started_at": "2025-01-01T12:00:00+00:00",
    "uptime": 12.5,
    "calls_served": 7,
    "health_port": 8000,
    "interval": 30.0,
    "timestamp": "2025-01-01T12:00:12+00:00",
    "broker_connected": True,
    "services": ["compute", "notify", "heartbeat", "health"],
}
CONCURRENT_BEATS = 12


class HeartbeatCase(HttpCase):
    """Posts beats to Odoo's real HTTP server, as a service would."""

    def setUp(self):
        super().setUp()
        # The server runs in this process: the environment it reads is ours.
        env_patch = patch.dict(os.environ, {heartbeats.SECRET_ENV_VAR: SECRET})
        env_patch.start()
        self.addCleanup(env_patch.stop)
        self.Instance = self.env["compute.service.instance"]

    def post(self, body, secret=SECRET, query=""):
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[heartbeats.SECRET_HEADER] = secret
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return self.opener.post(self.base_url() + ROUTE + query, data=body, headers=headers,
                                timeout=12)

    def instances(self, instance_id=BEAT["instance_id"]):
        self.env.invalidate_all()
        return self.Instance.search([("instance_id", "=", instance_id)])


@tagged("post_install", "-at_install")
class TestHeartbeatEndpoint(HeartbeatCase):
    """POST /compute_bridge/heartbeat, each request in this test's transaction."""

    def test_good_secret_upserts_the_instance(self):
        response = self.post(BEAT)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.json(), {"status": "ok"})
        instance = self.instances()
        self.assertRecordValues(instance, [{
            "service": "heartbeat", "host": "worker-1", "pid": 4242, "uptime": 12.5,
            "calls_served": 7, "interval": 30.0, "state": "live", "broker_state": "connected",
            "services": "compute, notify, heartbeat, health",
        }])
        self.assertTrue(instance.last_beat)
        self.assertEqual(json.loads(instance.payload)["health_port"], 8000)

        response = self.post(dict(BEAT, uptime=42.5, calls_served=9))
        self.assertEqual(response.status_code, 200, response.text)
        instance = self.instances()
        self.assertEqual(len(instance), 1, "the second beat updates the same row")
        self.assertEqual((instance.uptime, instance.calls_served), (42.5, 9))

    def test_secret_from_system_parameter(self):
        self.env["ir.config_parameter"].sudo().set_param(heartbeats.SECRET_PARAM, "db-secret")
        with patch.dict(os.environ, {heartbeats.SECRET_ENV_VAR: ""}):
            self.assertEqual(self.post(BEAT, secret=SECRET).status_code, 403)
            self.assertEqual(self.post(BEAT, secret="db-secret").status_code, 200)

    def test_missing_or_wrong_secret_is_403_and_writes_nothing(self):
        for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
            with self.subTest(secret=secret):
                response = self.post(BEAT, secret=secret)
                self.assertEqual(response.status_code, 403)
                self.assertEqual(response.text, "", "a refusal says nothing about why")
        self.assertFalse(self.instances())

    def test_no_secret_configured_refuses_everything(self):
        self.env["ir.config_parameter"].sudo().set_param(heartbeats.SECRET_PARAM, False)
        with patch.dict(os.environ, {heartbeats.SECRET_ENV_VAR: ""}):
            self.assertEqual(self.post(BEAT, secret="").status_code, 403)
        self.assertFalse(self.instances())

    def test_malformed_body_is_400_with_a_reason(self):
        cases = {
            b"{not json": "not valid JSON",
            b"[1, 2, 3]": "must be a JSON object",
            json.dumps(dict(BEAT, instance_id="")).encode(): "'instance_id' is required",
            json.dumps(dict(BEAT, pid="many")).encode(): "'pid' must be a whole number",
        }
        for body, reason in cases.items():
            with self.subTest(body=body):
                response = self.post(body)
                self.assertEqual(response.status_code, 400)
                self.assertIn(reason, response.json()["error"])
        self.assertFalse(self.Instance.search([]).filtered(lambda i: i.host == "worker-1"))

    def test_out_of_range_or_unsafe_beats_are_400(self):
        """Values the columns, the stale arithmetic or the screen cannot take are refused with a
        reason, never a 500 or a row that breaks the instances view."""
        nested = b"[" * 5000 + b"]" * 5000
        cases = {
            "interval": dict(BEAT, interval=1e11),
            "huge interval": dict(BEAT, interval=1e14),
            "pid": dict(BEAT, pid=2**40),
            "uptime": dict(BEAT, uptime=1e308),
            "calls_served": dict(BEAT, calls_served=2**60),
            "NUL": dict(BEAT, service="comp\x00ute"),
            "bidi override": dict(BEAT, service="\u202eetupmoc"),
            "bidi isolate": dict(BEAT, host="box\u2067"),
            "lone surrogate": dict(BEAT, instance_id="\ud800"),
            "services": dict(BEAT, services="compute"),
            "service name": dict(BEAT, services=["compute", "\x1b[31m"]),
            "broker_connected": dict(BEAT, broker_connected="yes"),
            "nested": json.dumps(BEAT).encode()[:-1] + b', "deep": ' + nested + b"}",
        }
        for name, body in cases.items():
            with self.subTest(name):
                response = self.post(body)
                self.assertEqual(response.status_code, 400, response.text)
                self.assertTrue(response.json()["error"])
        self.assertFalse(self.instances())

    def test_counters_beyond_32_bits_are_kept(self):
        big = dict(BEAT, calls_served=2**31, pid=heartbeats.MAX_PID,
                   uptime=heartbeats.MAX_UPTIME, interval=heartbeats.MAX_INTERVAL)
        response = self.post(big)
        self.assertEqual(response.status_code, 200, response.text)
        instance = self.instances()
        self.assertRecordValues(instance, [{
            "calls_served": 2**31, "pid": heartbeats.MAX_PID, "interval": heartbeats.MAX_INTERVAL,
            "state": "live",
        }])
        self.assertEqual(self.Instance.search([("state", "=", "live")]) & instance, instance)
        self.assertFalse(self.Instance.search([("state", "=", "stale")]) & instance)

    def test_a_disconnected_broker_is_shown(self):
        self.post(dict(BEAT, broker_connected=False))
        instance = self.instances()
        self.assertRecordValues(instance, [{"broker_state": "disconnected",
                                            "state": "disconnected"}])
        self.assertFalse(self.Instance.search([("state", "=", "live")]) & instance)
        self.assertEqual(self.Instance.search([("state", "=", "disconnected")]) & instance,
                         instance)
        self.post(dict(BEAT, broker_connected=True))
        self.assertEqual(self.instances().state, "live")
        # services that do not report it: unknown, and live while they beat
        self.post({k: v for k, v in BEAT.items() if k != "broker_connected"})
        self.assertRecordValues(self.instances(), [{"broker_state": False, "state": "live"}])

    def test_new_instances_are_capped(self):
        room = 2
        cap = self.Instance.search_count([]) + room
        with patch.object(compute_service_instance, "MAX_INSTANCES", cap):
            for number in range(room):
                response = self.post(dict(BEAT, instance_id="new-%d" % number))
                self.assertEqual(response.status_code, 200, response.text)
            response = self.post(dict(BEAT, instance_id="one-too-many"))
            self.assertEqual(response.status_code, 429, response.text)
            self.assertFalse(self.instances("one-too-many"))
            self.assertEqual(self.post(dict(BEAT, instance_id="new-0")).status_code, 200,
                             "a known instance still beats")
            # a stale row makes room for a new instance
            self.env.cr.execute("UPDATE compute_service_instance SET last_beat = '2000-01-01'"
                                " WHERE instance_id = 'new-1'")
            response = self.post(dict(BEAT, instance_id="one-too-many"))
            self.assertEqual(response.status_code, 200, response.text)
        self.assertTrue(self.instances("one-too-many"))
        self.assertFalse(self.instances("new-1"))

    def test_oversized_body_is_refused(self):
        body = json.dumps(dict(BEAT, padding="x" * heartbeats.MAX_BODY_BYTES)).encode()
        response = self.post(body)
        self.assertEqual(response.status_code, 413)
        self.assertFalse(self.instances())

    def test_body_without_length_is_refused(self):
        # a generator makes requests send the body chunked, without Content-Length
        chunks = iter([json.dumps(BEAT).encode()])
        response = self.opener.post(
            self.base_url() + ROUTE, data=chunks, timeout=12,
            headers={"Content-Type": "application/json", heartbeats.SECRET_HEADER: SECRET},
        )
        self.assertEqual(response.status_code, 411)
        self.assertFalse(self.instances())

    def test_db_parameter_must_name_this_database(self):
        response = self.post(BEAT, query="?db=%s" % self.env.cr.dbname)
        self.assertEqual(response.status_code, 200, response.text)
        response = self.post(dict(BEAT, instance_id="elsewhere"), query="?db=some_other_db")
        self.assertEqual(response.status_code, 409)
        self.assertFalse(self.instances("elsewhere"))

    def test_get_is_not_allowed(self):
        response = self.opener.get(self.base_url() + ROUTE, timeout=12)
        self.assertEqual(response.status_code, 405)


@tagged("post_install", "-at_install")
class TestConcurrentFirstBeats(HeartbeatCase):
    """Requests in their own transactions, as in production: what they write is committed."""

    registry_test_mode = False

    def setUp(self):
        super().setUp()
        let_other_threads_open_the_registry(self)

    def test_simultaneous_first_beats_make_one_row(self):
        instance_id = "concurrent-%s" % self.env.cr.dbname
        self.addCleanup(self._delete, instance_id)
        start = threading.Barrier(CONCURRENT_BEATS)

        def first_beat(number):
            start.wait()
            return self.post(dict(BEAT, instance_id=instance_id, calls_served=number))

        with ThreadPoolExecutor(CONCURRENT_BEATS) as pool:
            responses = list(pool.map(first_beat, range(CONCURRENT_BEATS)))
        self.assertEqual([r.status_code for r in responses], [200] * CONCURRENT_BEATS,
                         [r.text for r in responses if r.status_code != 200])
        with self.registry.cursor() as cr:
            cr.execute("SELECT count(*) FROM compute_service_instance WHERE instance_id = %s",
                       [instance_id])
            self.assertEqual(cr.fetchone()[0], 1)

    def _delete(self, instance_id):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM compute_service_instance WHERE instance_id = %s",
                       [instance_id])


# Real `nameko run` processes beating into a real Odoo server are tested end to end in
# tests/faults/test_60_security.py::test_heartbeats_demand_the_secret: inside Odoo's own runner,
# beats that arrive while the module installs wait on the registry lock and hang HttpCase.

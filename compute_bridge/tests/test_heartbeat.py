import json
import os
from unittest.mock import patch

from odoo.tests import HttpCase, tagged

from odoo.addons.compute_bridge import heartbeats
from odoo.addons.compute_bridge.controllers.heartbeat import ROUTE

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
}


@tagged("post_install", "-at_install")
class TestHeartbeatEndpoint(HttpCase):
    """POST /compute_bridge/heartbeat through Odoo's real HTTP server, as a service would."""

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

    def test_good_secret_upserts_the_instance(self):
        response = self.post(BEAT)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.json(), {"status": "ok"})
        instance = self.instances()
        self.assertRecordValues(instance, [{
            "service": "heartbeat", "host": "worker-1", "pid": 4242, "uptime": 12.5,
            "calls_served": 7, "interval": 30.0, "state": "live",
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


# Real `nameko run` processes beating into a real Odoo server are tested end to end in
# tests/faults/test_60_security.py::test_heartbeats_demand_the_secret: inside Odoo's own runner,
# beats that arrive while the module installs wait on the registry lock and hang HttpCase.

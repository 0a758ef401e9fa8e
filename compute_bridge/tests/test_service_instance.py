import doctest
from datetime import timedelta

from freezegun import freeze_time

from odoo import fields
from odoo.tests import TransactionCase, tagged

from odoo.addons.compute_bridge import heartbeats
from odoo.addons.compute_bridge.models.compute_service_instance import PURGE_AFTER_DAYS

NOW = fields.Datetime.to_datetime("2025-01-01 12:00:00")


def beat(instance_id="i-1", **values):
    """A parsed heartbeat as the controller hands it to the model, with ``values`` changed."""
    values = dict(
        {"service": "heartbeat", "host": "box", "pid": 42, "uptime": 1.5, "calls_served": 0,
         "interval": 30.0, "payload": "{}"},
        **values,
    )
    values["instance_id"] = instance_id
    return values


@tagged("post_install", "-at_install")
class TestHealthRules(TransactionCase):
    """The pure rules of compute_bridge/heartbeats.py, through its doctests."""

    def test_doctests(self):
        result = doctest.testmod(heartbeats, optionflags=doctest.ELLIPSIS)
        self.assertGreater(result.attempted, 10)
        self.assertEqual(result.failed, 0, "heartbeats.py doctests failed (see the log above)")


@tagged("post_install", "-at_install")
class TestServiceInstance(TransactionCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Instance = cls.env["compute.service.instance"]

    def test_record_heartbeat_upserts(self):
        with freeze_time(NOW):
            first = self.Instance._record_heartbeat(beat(calls_served=1))
        with freeze_time(NOW + timedelta(seconds=30)):
            second = self.Instance._record_heartbeat(beat(calls_served=5, uptime=31.5))
        self.assertEqual(first, second, "the same instance_id updates its row")
        self.assertEqual(second.calls_served, 5)
        self.assertEqual(second.last_beat, NOW + timedelta(seconds=30))
        self.assertEqual(self.Instance.search_count([("instance_id", "=", "i-1")]), 1)

    def test_stale_after_three_missed_intervals(self):
        with freeze_time(NOW):
            instance = self.Instance._record_heartbeat(beat(interval=10.0))
        with freeze_time(NOW + timedelta(seconds=30)):
            instance.invalidate_recordset(["state"])
            self.assertEqual(instance.state, "live", "three intervals exactly: still live")
        with freeze_time(NOW + timedelta(seconds=31)):
            instance.invalidate_recordset(["state"])
            self.assertEqual(instance.state, "stale")

    def test_live_and_stale_filters(self):
        with freeze_time(NOW - timedelta(minutes=10)):
            gone = self.Instance._record_heartbeat(beat("gone", interval=30.0))
        with freeze_time(NOW - timedelta(minutes=10)):
            # a slow beater: ten minutes of silence is less than three of its intervals
            slow = self.Instance._record_heartbeat(beat("slow", interval=600.0))
        with freeze_time(NOW):
            fresh = self.Instance._record_heartbeat(beat("fresh"))
            mine = gone | slow | fresh
            live = self.Instance.search([("state", "=", "live"), ("id", "in", mine.ids)])
            stale = self.Instance.search([("state", "=", "stale"), ("id", "in", mine.ids)])
            not_stale = self.Instance.search([("state", "!=", "stale"), ("id", "in", mine.ids)])
        self.assertEqual(live, slow | fresh)
        self.assertEqual(stale, gone)
        self.assertEqual(not_stale, live)

    def test_rows_beyond_the_interval_bound_still_list(self):
        """A row whose interval is beyond MAX_INTERVAL (imported, written in SQL) counts with
        that bound: its state computes and the Live/Stale filters run (no timedelta or
        timestamp overflow)."""
        with freeze_time(NOW):
            instance = self.Instance._record_heartbeat(beat("old-row"))
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE compute_service_instance SET interval = 1e14 WHERE id = %s", [instance.id])
        self.env.invalidate_all()
        with freeze_time(NOW + timedelta(seconds=3 * heartbeats.MAX_INTERVAL + 1)):
            self.assertEqual(instance.state, "stale")
            self.assertEqual(self.Instance.search([("state", "=", "stale")]) & instance, instance)
            self.assertFalse(self.Instance.search([("state", "=", "live")]) & instance)

    def test_gc_purges_only_long_silent_instances(self):
        with freeze_time(NOW - timedelta(days=PURGE_AFTER_DAYS, minutes=1)):
            old = self.Instance._record_heartbeat(beat("old"))
        with freeze_time(NOW - timedelta(hours=1)):
            recent = self.Instance._record_heartbeat(beat("recent"))
        with freeze_time(NOW):
            self.Instance._gc_stale_instances()
        self.assertFalse(old.exists())
        self.assertTrue(recent.exists(), "stale but recent: kept for the operator to see")

    def test_install_generated_a_secret(self):
        params = self.env["ir.config_parameter"].sudo()
        installed = params.get_param(heartbeats.SECRET_PARAM)
        self.assertGreaterEqual(len(installed or ""), 32)
        self.Instance._init_heartbeat_secret()
        self.assertEqual(params.get_param(heartbeats.SECRET_PARAM), installed, "kept, not rotated")

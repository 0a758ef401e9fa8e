import base64
import os
from unittest.mock import patch

from odoo.tests import HttpCase, tagged
from odoo.tests.common import ChromeBrowser

from .common import BROKER_URL, ComputeBridgeCase

# When set (tools/screenshot.sh sets it), the tour's browser saves the finished form there as
# screenshot_form.png: the README's and the apps page's screenshot come from this very test.
SCREENSHOT_DIR_ENV = "COMPUTE_BRIDGE_SCREENSHOT_DIR"
SCREENSHOT_NAME = "screenshot_form.png"
TOUR_URL = "/odoo/action-compute_bridge.compute_operation_action"
INSTANCES_URL = "/odoo/action-compute_bridge.compute_service_instance_action"
TOUR_TIMEOUT = 120  # seconds: asset bundles are built on the first visit, on 2 shared cores


@tagged("post_install", "-at_install")
class TestTour(HttpCase):
    """Headless Chromium adds 99999 and 99999 through the running Nameko services."""

    def setUp(self):
        super().setUp()
        # the browser's requests share this test's transaction: they see this broker URL
        ComputeBridgeCase.set_broker(self.env, BROKER_URL)

    def test_suma_in_the_browser(self):
        shots = []
        screenshot_dir = os.environ.get(SCREENSHOT_DIR_ENV)
        if screenshot_dir:
            with patch.object(ChromeBrowser, "stop", _screenshot_before(ChromeBrowser.stop, shots)):
                self.start_tour(TOUR_URL, "compute_bridge_tour", login="admin",
                                timeout=TOUR_TIMEOUT)
        else:
            self.start_tour(TOUR_URL, "compute_bridge_tour", login="admin", timeout=TOUR_TIMEOUT)

        operation = self.env["compute.operation"].search(
            [("field_1", "=", 99999), ("field_2", "=", 99999)], order="id desc", limit=1
        )
        self.assertRecordValues(operation, [{"state": "done", "result": 199998.0}])

        if screenshot_dir:
            self.assertTrue(shots, "the browser took no screenshot")
            with open(os.path.join(screenshot_dir, SCREENSHOT_NAME), "wb") as png:
                png.write(shots[-1])

    def test_suma_in_background_button(self):
        self.start_tour(TOUR_URL, "compute_bridge_background_tour", login="admin",
                        timeout=TOUR_TIMEOUT)
        operation = self.env["compute.operation"].search(
            [("field_1", "=", 20), ("field_2", "=", 22)], order="id desc", limit=1)
        self.assertEqual(operation.state, "queued")
        call = operation.bridge_call_id
        self.assertRecordValues(call, [{"state": "queued", "user_id": self.env.ref(
            "base.user_admin").id, "args_json": "[20.0,22.0]"}])

    def test_a_number_too_large_is_refused_not_zeroed(self):
        """The browser reads "1e400" as Infinity and sends it as null: saving must refuse it
        with the field's name, not store 0 and compute 0 + 1."""
        self.start_tour(TOUR_URL, "compute_bridge_refused_value_tour", login="admin",
                        timeout=TOUR_TIMEOUT)
        self.assertFalse(self.env["compute.operation"].search([("field_2", "=", 1)]))

    def test_decimals_keep_their_precision(self):
        self.start_tour(TOUR_URL, "compute_bridge_precision_tour", login="admin",
                        timeout=TOUR_TIMEOUT)
        operation = self.env["compute.operation"].search([], order="id desc", limit=1)
        self.assertRecordValues(operation, [{
            "name": "0.001 + 0.002", "field_1": 0.001, "field_2": 0.002, "state": "done",
        }])

    def test_instances_list(self):
        self.env["compute.service.instance"].search([]).unlink()
        self.env["compute.service.instance"]._record_heartbeat({
            "instance_id": "tour-1", "service": "heartbeat", "services": "compute, notify",
            "host": "box", "pid": 23175, "uptime": 1.0, "calls_served": 0, "interval": 30.0,
            "broker_state": "disconnected", "payload": "{}",
        })
        self.start_tour(INSTANCES_URL, "compute_bridge_instances_tour", login="admin",
                        timeout=TOUR_TIMEOUT)


def _screenshot_before(stop, shots):
    """ChromeBrowser.stop, preceded by a capture of the page as the tour left it."""

    def stop_after_screenshot(browser):
        if hasattr(browser, "ws"):
            reply = browser._websocket_request("Page.captureScreenshot", params={"format": "png"})
            if reply and reply.get("data"):
                shots.append(base64.b64decode(reply["data"]))
        return stop(browser)

    return stop_after_screenshot

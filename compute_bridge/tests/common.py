"""Helpers for the compute_bridge tests: they run against the real broker and services.

The harness (tools/test.sh) starts ``nameko run services`` and exports ``AMQP_URI``; without
it the tests use the default local broker.

    class MyTest(ComputeBridgeCase):
        def test_it(self):
            operation = self.new_operation(1, 2)
            operation.action_suma()
            self.assertEqual(operation.result, 3)
"""

import os
from unittest.mock import patch

from odoo.modules.registry import DummyRLock, Registry
from odoo.tests import TransactionCase, new_test_user

from ..rpc import BROKER_URL_ENV_VAR, BROKER_URL_PARAM, DEFAULT_BROKER_URL, RPC_TIMEOUT_PARAM

BROKER_URL = os.environ.get("AMQP_URI") or DEFAULT_BROKER_URL
TEST_RPC_TIMEOUT = 3.0  # seconds; the compute service answers in milliseconds
SECRET = "s3cr3t-pa55word"  # must never appear in an error, log line or notification
# Nothing listens on port 1: the connection is refused at once.
CLOSED_PORT_URL = "pyamqp://guest:%s@127.0.0.1:1" % SECRET

USER_GROUP = "compute_bridge.group_compute_bridge_user"
MANAGER_GROUP = "compute_bridge.group_compute_bridge_manager"


def let_other_threads_open_the_registry(case):
    """For a test whose other threads (HTTP requests, a second user) work in real transactions
    of their own: Odoo's runner holds Registry._lock while it runs post-install tests, so those
    threads would wait for it forever. HttpCase's test mode swaps the lock for a dummy one; this
    does that swap alone, for the duration of the test."""
    case.startPatcher(patch.object(Registry, "_lock", DummyRLock()))


class ComputeBridgeCase(TransactionCase):
    """Points the addon at the test broker, with no environment override, and creates one user
    per role: ``cls.user`` (compute), ``cls.manager`` (configure), ``cls.portal_user``."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.set_broker(cls.env, BROKER_URL)
        cls.env["ir.config_parameter"].sudo().set_param(RPC_TIMEOUT_PARAM, TEST_RPC_TIMEOUT)
        # The server running the tests may have the override set; these tests choose the URL.
        environ = patch.dict(os.environ)
        environ.start()
        cls.addClassCleanup(environ.stop)
        os.environ.pop(BROKER_URL_ENV_VAR, None)
        cls.user = new_test_user(cls.env, "cb_user", groups="base.group_user," + USER_GROUP)
        cls.manager = new_test_user(
            cls.env, "cb_manager", groups="base.group_user," + MANAGER_GROUP
        )
        cls.portal_user = new_test_user(cls.env, "cb_portal", groups="base.group_portal")
        cls.Operation = cls.env["compute.operation"]

    @staticmethod
    def set_broker(env, url):
        """Point the addon at ``url`` (the system parameter, as Settings would)."""
        env["ir.config_parameter"].sudo().set_param(BROKER_URL_PARAM, url)

    def new_operation(self, value_1, value_2, user=None):
        """A draft operation, created as ``user`` (default: the compute user)."""
        Operation = self.Operation.with_user(user or self.user)
        return Operation.create({"field_1": value_1, "field_2": value_2})

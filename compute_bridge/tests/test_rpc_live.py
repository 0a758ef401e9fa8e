"""The RPC client against the real broker and services (no Odoo ORM, no fakes)."""

import socket
import time
import uuid

from odoo.tests import BaseCase

from .. import rpc
from ..rpc import client
from .common import BROKER_URL, CLOSED_PORT_URL, SECRET

LIVE_TIMEOUT = 1.0  # seconds: short, so the timeout test is quick
SLACK = 1.0  # the brief: unreachable/timeout must fail within timeout + 1 s


class TestRpcLive(BaseCase):
    def setUp(self):
        super().setUp()
        self.config = rpc.BridgeConfig(BROKER_URL, LIVE_TIMEOUT, False)

    def test_call_and_pool_reuse(self):
        self.assertEqual(rpc.call(self.config, "compute", "method", 99999, 99999), 199998)
        key = (self.config.broker_url, self.config.timeout)
        self.assertGreaterEqual(client._POOL.idle_count(key), 1)
        self.assertEqual(rpc.call(self.config, "compute", "method", 1, 2), 3)

    def test_batch(self):
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 5)]
        outcomes = rpc.call_many(self.config, "compute", "method", args)
        self.assertEqual([o.value for o in outcomes], [a + b for a, b in args])

    def test_remote_invalid_operand(self):
        with self.assertRaises(rpc.InvalidOperands) as caught:
            rpc.call(self.config, "compute", "method", "abc", 1)
        self.assertIn("value1", str(caught.exception))

    def test_unknown_service_is_immediate(self):
        started = time.monotonic()
        with self.assertRaises(rpc.ServiceUnavailable):
            rpc.call(self.config, "cb_no_such_service_%s" % uuid.uuid4().hex, "method", 1, 2)
        self.assertLess(time.monotonic() - started, LIVE_TIMEOUT)

    def test_broker_unreachable_is_fast_and_masked(self):
        config = rpc.BridgeConfig(CLOSED_PORT_URL, LIVE_TIMEOUT, False)
        started = time.monotonic()
        with self.assertRaises(rpc.BrokerUnreachable) as caught:
            rpc.test_connection(config)
        self.assertLess(time.monotonic() - started, LIVE_TIMEOUT + SLACK)
        self.assertNotIn(SECRET, str(caught.exception))
        self.assertIn("guest:***@127.0.0.1:1", str(caught.exception))

    def test_queue_without_consumer_times_out(self):
        from kombu import Connection, Exchange, Queue

        service = "cb_no_consumer_%s" % uuid.uuid4().hex[:8]
        queue = Queue("rpc-%s" % service, Exchange("nameko-rpc", type="topic", durable=True),
                      routing_key="%s.*" % service, auto_delete=False)
        with Connection(BROKER_URL) as connection:
            bound = queue(connection.default_channel)
            bound.declare()
            try:
                started = time.monotonic()
                with self.assertRaises(rpc.ServiceTimeout):
                    rpc.call(self.config, service, "method", 1, 2)
                self.assertLess(time.monotonic() - started, LIVE_TIMEOUT + SLACK)
            finally:
                bound.delete()
        # the next call works on a fresh connection
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 2), 4)

    def test_reconnects_when_idle_connection_was_closed(self):
        rpc.call(self.config, "compute", "method", 1, 1)
        key = (self.config.broker_url, self.config.timeout)
        # Close the socket under an idle proxy, as a broker restart or a firewall would.
        with client._POOL._lock:
            idle = list(client._POOL._idle.get(key, []))
        self.assertTrue(idle)
        for item in idle:
            amqp_connection = item.resource._consumer.connection.connection
            amqp_connection.transport.sock.shutdown(socket.SHUT_RDWR)
        self.assertEqual(rpc.call(self.config, "compute", "method", 20, 22), 42)

"""The RPC client against the real broker and services (no Odoo ORM, no fakes)."""

import socket
import time
import uuid
from unittest import mock

from odoo.tests import BaseCase

from .. import rpc
from ..rpc import client, nameko_amqp
from .common import BROKER_URL, CLOSED_PORT_URL, SECRET
from .test_rpc_core import MARGIN, MisbehavingPeer, call_within

LIVE_TIMEOUT = 1.0  # seconds: short, so the timeout tests are quick
SLACK = 1.0  # unreachable/timeout must fail within timeout + 1 s
BATCH_TIMEOUT = 30.0  # seconds: one deadline covers the whole batch, on a loaded test machine
FROZEN_TIMEOUT = 2.0  # seconds: the RPC timeout of the frozen-service batch
FROZEN_BATCH = 1000  # several chunks: each must not wait the timeout again
# A batch that cannot all be published within its deadline, however fast the machine.
PUBLISH_CUT_TIMEOUT = 0.2  # seconds
PUBLISH_CUT_BATCH = 20_000
EXPIRY_WAIT = 2.0  # seconds for the broker to drop a request whose deadline has passed
# A queue that is always full and refuses what is published to it (a nack with confirms).
REFUSING_QUEUE_ARGUMENTS = {"x-max-length": 0, "x-overflow": "reject-publish"}


def rpc_queue(service, arguments=None):
    """The queue ``nameko run`` declares for ``service``, bound the way nameko binds it."""
    from kombu import Exchange, Queue

    return Queue("rpc-%s" % service, Exchange("nameko-rpc", type="topic", durable=True),
                 routing_key="%s.*" % service, auto_delete=False, queue_arguments=arguments)


class TestRpcLive(BaseCase):
    def setUp(self):
        super().setUp()
        self.config = rpc.BridgeConfig(BROKER_URL, LIVE_TIMEOUT, False)

    def test_call_and_pool_reuse(self):
        self.assertEqual(rpc.call(self.config, "compute", "method", 99999, 99999), 199998)
        self.assertGreaterEqual(client._POOL.idle_count(self.config.broker_url), 1)
        self.assertEqual(rpc.call(self.config, "compute", "method", 1, 2), 3)

    def test_batch(self):
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 5)]
        config = rpc.BridgeConfig(BROKER_URL, BATCH_TIMEOUT, False)
        outcomes = rpc.call_many(config, "compute", "method", args)
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
            rpc.call(config, "compute", "method", 1, 1)
        self.assertLess(time.monotonic() - started, LIVE_TIMEOUT + SLACK)
        self.assertNotIn(SECRET, str(caught.exception))
        self.assertIn("guest:***@127.0.0.1:1", str(caught.exception))

    def test_queue_without_consumer_times_out(self):
        from kombu import Connection

        service = "cb_no_consumer_%s" % uuid.uuid4().hex[:8]
        with Connection(BROKER_URL) as connection:
            bound = rpc_queue(service)(connection.default_channel)
            bound.declare()
            try:
                started = time.monotonic()
                with self.assertRaises(rpc.ServiceTimeout):
                    rpc.call(self.config, service, "method", 1, 2)
                self.assertLess(time.monotonic() - started, LIVE_TIMEOUT + SLACK)
                # the request expires with its deadline: no pile of unwanted requests
                waited_until = time.monotonic() + EXPIRY_WAIT
                while bound.queue_declare(passive=True).message_count and (
                        time.monotonic() < waited_until):
                    time.sleep(0.05)
                self.assertEqual(bound.queue_declare(passive=True).message_count, 0)
            finally:
                bound.delete()
        # the next call works on a fresh connection
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 2), 4)

    def test_request_the_broker_refuses_is_sent_again_then_times_out(self):
        """A queue that refuses every publish (as a quorum queue without a leader does) nacks
        the request: it is sent again after a pause, on a new channel, until the deadline,
        instead of waiting for a reply that cannot come."""
        from kombu import Connection

        pauses = []
        pause = nameko_amqp.RpcConnection.pause_after_refusal

        def counted(connection, seconds):
            pauses.append(seconds)
            return pause(connection, seconds)

        service = "cb_refusing_%s" % uuid.uuid4().hex[:8]
        with Connection(BROKER_URL) as connection:
            bound = rpc_queue(service, REFUSING_QUEUE_ARGUMENTS)(connection.default_channel)
            bound.declare()
            try:
                started = time.monotonic()
                with mock.patch.object(nameko_amqp.RpcConnection, "pause_after_refusal",
                                       counted), self.assertRaises(rpc.RequestsNotAccepted):
                    rpc.call(self.config, service, "method", 1, 2)
                self.assertLess(time.monotonic() - started, LIVE_TIMEOUT + SLACK)
            finally:
                bound.delete()
        self.assertGreaterEqual(len(pauses), 2)
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 2), 4)

    def test_deadline_during_publishing_keeps_the_replies(self):
        """A batch too large for its deadline is cut while it is still publishing: the replies
        already read are kept, the rest are ServiceTimeout, and the broker is not blamed."""
        rpc.call(self.config, "compute", "method", 1, 1)  # a pooled connection: no connect time
        config = rpc.BridgeConfig(BROKER_URL, PUBLISH_CUT_TIMEOUT, False)
        args = [(i, 1) for i in range(PUBLISH_CUT_BATCH)]
        outcomes = rpc.call_many(config, "compute", "method", args)
        self.assertEqual(len(outcomes), PUBLISH_CUT_BATCH)
        late = [o for o in outcomes if o.error is not None]
        self.assertTrue(late, "the batch fitted in %s s: make it larger" % PUBLISH_CUT_TIMEOUT)
        self.assertTrue(all(isinstance(o.error, rpc.ServiceTimeout) for o in late),
                        {type(o.error).__name__ for o in late})
        for (a, b), outcome in zip(args, outcomes, strict=True):
            if outcome.error is None:
                self.assertEqual(outcome.value, a + b)
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 2), 4)

    def test_failover_passes_a_node_that_hangs(self):
        """The first broker of a failover list accepts and never answers: the next one is
        tried within the same call, not after the whole deadline went to the first."""
        peer = MisbehavingPeer(drip=False)
        self.addCleanup(peer.close)
        config = rpc.BridgeConfig("%s;%s" % (peer.url, BROKER_URL), FROZEN_TIMEOUT, False)
        done = call_within(self, FROZEN_TIMEOUT + MARGIN, rpc.call, config,
                           "compute", "method", 20, 22)
        self.assertEqual(done.get("result"), 42, repr(done))

    def test_frozen_service_fails_a_whole_batch_within_one_timeout(self):
        """A consumer that takes the requests and never answers (a frozen ``nameko run``):
        every chunk of the batch must share one deadline, not wait the timeout again."""
        from kombu import Connection, Consumer

        service = "cb_frozen_%s" % uuid.uuid4().hex[:8]
        config = rpc.BridgeConfig(BROKER_URL, FROZEN_TIMEOUT, False)
        with Connection(BROKER_URL) as connection:
            queue = rpc_queue(service)(connection.default_channel)
            queue.declare()
            try:
                with Consumer(connection.channel(), [queue], callbacks=[lambda body, message: None],
                              accept=["json"]):
                    done = call_within(self, FROZEN_TIMEOUT + MARGIN, rpc.call_many, config,
                                       service, "method", [(i, i) for i in range(FROZEN_BATCH)])
            finally:
                queue.delete()
        outcomes = done.get("result")
        self.assertEqual(len(outcomes or ()), FROZEN_BATCH, repr(done))
        for outcome in outcomes:
            self.assertIsInstance(outcome.error, rpc.ServiceTimeout)
        self.assertEqual(outcomes[0].error.params["timeout"], FROZEN_TIMEOUT)
        self.assertNotIn(SECRET, str(outcomes[0].error))

    def test_reconnects_when_idle_connection_was_closed(self):
        rpc.call(self.config, "compute", "method", 1, 1)
        # Close the socket under an idle connection, as a broker restart or a firewall would.
        with client._POOL._lock:
            idle = list(client._POOL._idle.get(self.config.broker_url, []))
        self.assertTrue(idle)
        for item in idle:
            item.resource._connection.transport.sock.shutdown(socket.SHUT_RDWR)
        self.assertEqual(rpc.call(self.config, "compute", "method", 20, 22), 42)

    def test_batch_whose_connection_dies_midway_is_sent_again(self):
        """The socket under a batch's connection is cut while the second chunk awaits its
        replies (a broker node killed): those calls go again on a fresh connection; with
        ``resend=False`` those not answered yet (replies already in the socket's buffer are
        read) end with BrokerUnreachable and only the unsent calls go."""

        from ..rpc import nameko_amqp

        args = [(i, i) for i in range(2 * client.BATCH_CHUNK_SIZE + 5)]
        config = rpc.BridgeConfig(BROKER_URL, BATCH_TIMEOUT, False)
        collect = nameko_amqp.RpcConnection.collect
        cut = []

        def collect_then_cut(connection, correlation_ids):
            connection.chunks_seen = getattr(connection, "chunks_seen", 0) + 1
            if connection.chunks_seen == 2 and not cut:
                cut.append(connection)
                connection._connection.transport.sock.shutdown(socket.SHUT_RDWR)
            return collect(connection, correlation_ids)

        for resend in (True, False):
            cut.clear()
            client.close_pool()
            with mock.patch.object(nameko_amqp.RpcConnection, "collect", collect_then_cut):
                outcomes = rpc.call_many(config, "compute", "method", args,
                                         **({} if resend else {"resend": False}))
            self.assertEqual(len(cut), 1)
            lost = range(client.BATCH_CHUNK_SIZE, 2 * client.BATCH_CHUNK_SIZE)
            for index, (outcome, (a, b)) in enumerate(zip(outcomes, args, strict=True)):
                if outcome.error is None:
                    self.assertEqual(outcome.value, a + b)
                else:
                    self.assertFalse(resend, outcome.error)
                    self.assertIn(index, lost)
                    self.assertIsInstance(outcome.error, rpc.BrokerUnreachable)

"""The pure-Python RPC layer, without Odoo's ORM.

``TestClient`` checks the decisions the client makes (chunk, retry once, drop a connection after
its deadline, map errors) with a fake connection; everything else here is real: the deadline
against real sockets that misbehave, URL checks, the pool, import hygiene.
tests/test_rpc_live.py checks the client against RabbitMQ and the services.
"""

import ast
import contextlib
import doctest
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from unittest import mock

from odoo.tests import BaseCase

from .. import rpc
from ..rpc import client, config, errors, nameko_amqp, pool

RPC_DIR = pathlib.Path(rpc.__file__).parent
SECRET = "s3cr3t-pa55word"
DEADLINE_TIMEOUT = 1.0  # seconds: the RPC timeout of the deadline tests
MARGIN = 1.0  # what a call may take beyond its timeout (closing, logging): a correctness bound
DRIP_INTERVAL = 0.5  # seconds between two bytes of the dribbling peer
AMQP_HEADER_SIZE = 8  # b"AMQP\x00\x00\x09\x01": a broker answers once it has read it


def call_within(test, bound, function, *args):
    """``{"result": ...}`` or ``{"error": ...}`` of ``function(*args)``, failing ``test`` if it
    has not returned after ``bound`` seconds. It runs in a daemon thread, so a call that never
    ends (what the test is about) cannot hang the test run."""
    done = {}

    def run():
        try:
            done["result"] = function(*args)
        except Exception as error:  # noqa: BLE001 - handed to the test, which checks its type
            done["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    test.assertFalse(thread.is_alive(), "the call has not ended after %.1f s" % bound)
    return done


class MisbehavingPeer:
    """A real TCP listener on 127.0.0.1 that accepts connections and, once it has read the
    client's protocol header, says nothing (``drip=False``) or sends one byte every
    :data:`DRIP_INTERVAL` seconds, forever: a frozen or hostile broker."""

    def __init__(self, drip):
        self.drip = drip
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = "pyamqp://guest:%s@127.0.0.1:%d" % (SECRET, self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                peer, _address = self.server.accept()
            except OSError:  # the listener was closed
                return
            threading.Thread(target=self._talk, args=(peer,), daemon=True).start()

    def _talk(self, peer):
        # OSError: the client gave up and closed its socket, which ends the conversation.
        with peer, contextlib.suppress(OSError):
            peer.recv(AMQP_HEADER_SIZE)
            while not self.closed.wait(DRIP_INTERVAL):
                if self.drip:
                    peer.send(b"\x01")

    def close(self):
        self.closed.set()
        self.server.close()


class FakeConnection:
    """Stands for a ``nameko_amqp.RpcConnection``: ``behaviour(connection, args)`` returns each
    reply as ``(value, (exc_type, text) or None)``, :data:`NO_REPLY`, or raises."""

    NO_REPLY = "no reply"
    LOST = "lost with the connection"  # the request went out, the connection died before its reply
    REFUSED = "nacked by the broker"
    NOT_ACCEPTED = "neither confirmed nor answered"  # a queue without its quorum
    created = []

    def __init__(self, key, deadline, behaviour):
        self.key, self.deadline, self.behaviour = key, deadline, behaviour
        self.alive, self.closed = True, False
        self.sent, self.replies, self.refused, self.pauses = [], {}, set(), []
        FakeConnection.created.append(self)

    def send(self, service, method, args, kwargs=None, headers=None):
        self.sent.append(args)
        self.replies[len(self.sent)] = self.behaviour(self, args)
        return len(self.sent)

    def collect(self, correlation_ids):
        lost = [cid for cid in correlation_ids if self.replies.get(cid) == self.LOST]
        for cid in lost:
            del self.replies[cid]
        if lost:
            raise ConnectionResetError("connection reset mid-batch")
        for cid in correlation_ids:
            if self.replies[cid] == self.REFUSED:
                del self.replies[cid]
                self.refused.add(cid)
        missing = [cid for cid in correlation_ids
                   if self.replies.get(cid) in (self.NO_REPLY, self.NOT_ACCEPTED)]
        self.not_accepted = {cid for cid in missing if self.replies[cid] == self.NOT_ACCEPTED}
        for cid in missing:
            del self.replies[cid]
        if missing:
            raise nameko_amqp.DeadlineExceeded("no reply before the deadline")

    def pop_reply(self, correlation_id):
        value, error = self.replies.pop(correlation_id)
        return value, error, time.monotonic()

    def unconfirmed(self):
        return getattr(self, "not_accepted", set())

    def pause_after_refusal(self, seconds):  # a pause of the mind: nothing sleeps
        if sum(self.pauses) + seconds >= self.deadline.remaining():
            raise nameko_amqp.DeadlineExceeded("the deadline passed while waiting")
        self.pauses.append(seconds)

    def is_alive(self):
        return self.alive

    def close(self):
        self.closed = True

    abort = close


class RpcCoreCase(BaseCase):
    def setUp(self):
        super().setUp()
        FakeConnection.created = []
        self.behaviour = lambda connection, args: (sum(args), None)
        self.pool = pool.ConnectionPool(lambda key, deadline: FakeConnection(
            key, deadline, lambda connection, args: self.behaviour(connection, args)))
        patcher = mock.patch.object(client, "_POOL", self.pool)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.config = rpc.BridgeConfig("pyamqp://guest:%s@broker" % SECRET, 2.0, False)


class TestConfig(BaseCase):
    def test_doctests(self):
        for module in (config, errors, nameko_amqp, pool):
            failures, tried = doctest.testmod(module)
            self.assertEqual(failures, 0, module.__name__)
            self.assertGreater(tried, 0, module.__name__)

    def test_precedence_env_then_param_then_default(self):
        params = {rpc.BROKER_URL_PARAM: "pyamqp://param", rpc.RPC_TIMEOUT_PARAM: "7"}
        environ = {rpc.BROKER_URL_ENV_VAR: "pyamqp://env"}
        self.assertEqual(
            rpc.read_config(params.get, environ), ("pyamqp://env", 7.0, True))
        self.assertEqual(rpc.read_config(params.get, {}), ("pyamqp://param", 7.0, False))
        self.assertEqual(
            rpc.read_config({}.get, {}),
            (rpc.DEFAULT_BROKER_URL, rpc.DEFAULT_RPC_TIMEOUT, False))

    def test_timeout_never_disabled(self):
        for raw in ("0", "-1", "inf", "abc", None, False):
            with self.subTest(raw=raw):
                timeout = rpc.read_config({rpc.RPC_TIMEOUT_PARAM: raw}.get, {}).timeout
                self.assertEqual(timeout, rpc.DEFAULT_RPC_TIMEOUT)

    def test_mask_url(self):
        self.assertEqual(rpc.mask_url("pyamqp://u:pw@h:1/v"), "pyamqp://u:***@h:1/v")
        self.assertEqual(rpc.mask_url("pyamqp://h"), "pyamqp://h")
        self.assertEqual(rpc.mask_url("pyamqp://u:pw@h:bad"), "pyamqp://u:***@h:bad")


class TestErrors(BaseCase):
    def test_params_contract(self):
        """The keys the Odoo model translates each message with; str() masks the password."""
        url = "pyamqp://guest:secret@broker"
        cases = [
            (rpc.BrokerUnreachable.from_exception(url, OSError("refused by %s" % url)),
             {"broker", "detail"}),
            (rpc.InvalidBrokerUrl(broker=rpc.mask_url(url), detail="port out of range"),
             {"broker", "detail"}),
            (rpc.ServiceUnavailable(service="compute", broker=rpc.mask_url(url)),
             {"service", "broker"}),
            (rpc.ServiceTimeout(service="compute", method="method", timeout=2.0,
                                broker=rpc.mask_url(url)),
             {"service", "method", "timeout", "broker"}),
            (errors.remote_error("compute", "method", "InvalidOperand", "value1 bad"),
             {"service", "method", "detail"}),
            (errors.remote_error("compute", "method", "KeyError", "boom"),
             {"service", "method", "exc_type", "detail"}),
        ]
        for error, keys in cases:
            with self.subTest(error=type(error).__name__):
                self.assertEqual(set(error.params), keys)
                self.assertEqual(str(error), type(error).MESSAGE % error.params)
                self.assertNotIn("secret", str(error))
        self.assertIsInstance(cases[4][0], rpc.InvalidOperands)
        self.assertEqual(cases[5][0].params["exc_type"], "KeyError")
        self.assertIn("guest:***@broker", cases[0][0].params["broker"])
        with self.assertRaises(TypeError):
            rpc.ServiceUnavailable(service="compute")  # a missing key is a programming error


class TestImportHygiene(BaseCase):
    def test_no_odoo_import(self):
        for path in RPC_DIR.glob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                for name in names:
                    self.assertNotEqual(name.split(".")[0], "odoo", "%s imports %s" % (path, name))

    def test_nameko_not_imported_at_import_time(self):
        # A fresh interpreter: this process has long imported nameko for other tests.
        script = (
            "import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location(\n"
            "    'cb_rpc', %r, submodule_search_locations=[%r])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "sys.modules['cb_rpc'] = module\n"
            "spec.loader.exec_module(module)\n"
            "loaded = sorted(m for m in ('odoo', 'nameko', 'eventlet', 'kombu', 'amqp')\n"
            "                if m in sys.modules)\n"
            "print(','.join(loaded))\n"
        ) % (str(RPC_DIR / "__init__.py"), str(RPC_DIR))
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"},
        )
        self.assertEqual(result.stdout.strip(), "", result.stderr)


class TestPool(BaseCase):
    def test_bounded_and_keyed(self):
        made = []
        connection_pool = pool.ConnectionPool(
            lambda key: made.append(key) or mock.Mock(), max_idle=2)
        items = [connection_pool.acquire(("url", 1.0)) for _ in range(3)]
        for item in items:
            connection_pool.release(item)
        self.assertEqual(connection_pool.idle_count(("url", 1.0)), 2)
        items[2].resource.close.assert_called_once()
        self.assertFalse(connection_pool.acquire(("url", 2.0)).reused)  # another key
        self.assertTrue(connection_pool.acquire(("url", 1.0)).reused)

    def test_thread_safe_checkout(self):
        connection_pool = pool.ConnectionPool(lambda key: mock.Mock(), max_idle=100)
        in_use, clashes = set(), []
        lock = threading.Lock()

        def worker():
            for _ in range(200):
                item = connection_pool.acquire("k")
                with lock:
                    if id(item) in in_use:
                        clashes.append(item)
                    in_use.add(id(item))
                with lock:
                    in_use.discard(id(item))
                connection_pool.release(item)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(clashes, [])

    def test_stale_idle_items_are_dropped(self):
        connection_pool = pool.ConnectionPool(lambda key: mock.Mock(), max_idle_seconds=0)
        first = connection_pool.acquire("k")
        connection_pool.release(first)
        second = connection_pool.acquire("k")
        self.assertIsNot(first, second)
        first.resource.abort.assert_called_once()

    def test_child_process_forgets_parent_connections_without_closing_them(self):
        parent_resource = mock.Mock()
        connection_pool = pool.ConnectionPool(lambda key: parent_resource)
        connection_pool.release(connection_pool.acquire("k"))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what would a prefork worker get?
            try:
                connection_pool.after_fork_in_child()  # what os.register_at_fork runs for _POOL
                answer = b"%d,%d" % (connection_pool.idle_count(), parent_resource.close.call_count)
                os.write(write_end, answer)
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        answer = os.read(read_end, 100)
        os.close(read_end)
        self.assertEqual(answer, b"0,0")
        self.assertEqual(connection_pool.idle_count(), 1)  # the parent keeps its own

    def test_pid_check_catches_unannounced_fork(self):
        connection_pool = pool.ConnectionPool(lambda key: mock.Mock())
        item = connection_pool.acquire("k")
        connection_pool.release(item)
        with mock.patch.object(pool.os, "getpid", return_value=os.getpid() + 1):
            self.assertEqual(connection_pool.idle_count(), 0)
            self.assertFalse(connection_pool.acquire("k").reused)
        item.resource.close.assert_not_called()

    def test_fork_hook_registered_for_client_pool(self):
        with mock.patch.object(client._POOL, "after_fork_in_child") as hook:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if hook.called else 1)
            _pid, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


class TestClient(RpcCoreCase):
    def test_batch_in_chunks_on_one_pooled_connection(self):
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 3)]
        outcomes = rpc.call_many(self.config, "compute", "method", args)
        self.assertEqual([outcome.value for outcome in outcomes], [a + b for a, b in args])
        self.assertEqual(len(FakeConnection.created), 1)
        self.assertEqual(FakeConnection.created[0].sent, args)
        self.assertEqual(self.pool.idle_count(), 1)

    def test_connection_error_on_pooled_connection_retries_once_on_fresh_one(self):
        rpc.call(self.config, "compute", "method", 1, 1)  # leaves one idle connection

        def dies_once(connection, args):
            if connection is FakeConnection.created[0]:
                raise ConnectionResetError("connection reset")
            return sum(args), None

        self.behaviour = dies_once
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 3), 5)
        self.assertTrue(FakeConnection.created[0].closed)
        self.assertEqual(len(FakeConnection.created), 2)

    def test_connection_error_on_fresh_connection_is_broker_unreachable(self):
        def refuse(connection, args):
            raise ConnectionRefusedError("refused by %s" % self.config.broker_url)

        self.behaviour = refuse
        with self.assertRaises(rpc.BrokerUnreachable) as caught:
            rpc.call(self.config, "compute", "method", 1, 1)
        self.assertNotIn(SECRET, str(caught.exception))
        self.assertIn("guest:***@broker", str(caught.exception))
        self.assertEqual(len(FakeConnection.created), 1)  # no retry

    def lose_first_connection_at(self, lost_args):
        """Behaviour: the first connection dies while ``lost_args`` await their replies."""
        def behaviour(connection, args):
            if connection is FakeConnection.created[0] and args in lost_args:
                return FakeConnection.LOST
            return sum(args), None

        return behaviour

    def test_lost_connection_mid_batch_resends_only_the_unanswered(self):
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 3)]
        self.behaviour = self.lose_first_connection_at({(5, 5)})
        outcomes = rpc.call_many(self.config, "compute", "method", args)  # a fresh connection
        self.assertEqual([outcome.value for outcome in outcomes], [a + b for a, b in args])
        self.assertEqual(len(FakeConnection.created), 2)
        self.assertTrue(FakeConnection.created[0].closed)
        # The first chunk's other replies had arrived; the next chunk was never sent.
        self.assertEqual(FakeConnection.created[1].sent, [(5, 5)] + args[-3:])

    def test_resend_false_never_sends_a_request_twice(self):
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 3)]
        self.behaviour = self.lose_first_connection_at({(5, 5)})
        outcomes = rpc.call_many(self.config, "compute", "method", args, resend=False)
        self.assertIsInstance(outcomes[5].error, rpc.BrokerUnreachable)
        self.assertNotIn(SECRET, str(outcomes[5].error))
        self.assertEqual([outcome.value for i, outcome in enumerate(outcomes) if i != 5],
                         [a + b for i, (a, b) in enumerate(args) if i != 5])
        self.assertEqual(FakeConnection.created[1].sent, args[-3:])  # only the never-sent ones
        with self.assertRaises(rpc.BrokerUnreachable):
            self.behaviour = self.lose_first_connection_at({(1, 2)})
            FakeConnection.created = []
            self.pool.close_all()
            rpc.call(self.config, "compute", "method", 1, 2, resend=False)
        self.assertEqual(len(FakeConnection.created), 1)

    def test_reconnects_are_bounded_and_keep_the_replies_already_read(self):
        args = [(i, i) for i in range(3)]

        def every_connection_dies_on_the_last(connection, call_args):
            return FakeConnection.LOST if call_args == (2, 2) else (sum(call_args), None)

        self.behaviour = every_connection_dies_on_the_last
        self.config = rpc.BridgeConfig("pyamqp://a:1;pyamqp://b:2", 2.0, False)
        outcomes = rpc.call_many(self.config, "compute", "method", args)
        self.assertEqual([outcome.value for outcome in outcomes[:2]], [0, 2])
        self.assertIsInstance(outcomes[2].error, rpc.BrokerUnreachable)
        self.assertEqual(len(FakeConnection.created), client.MAX_RECONNECTS + 1)

    def test_failover_url_moves_a_fresh_connection_on(self):
        self.config = rpc.BridgeConfig("pyamqp://a:1;pyamqp://b:2", 2.0, False)
        self.behaviour = self.lose_first_connection_at({(1, 2)})
        self.assertEqual(rpc.call(self.config, "compute", "method", 1, 2), 3)
        self.assertEqual(len(FakeConnection.created), 2)

    def test_dead_idle_connection_is_replaced_before_use(self):
        rpc.call(self.config, "compute", "method", 1, 1)
        FakeConnection.created[0].alive = False
        self.assertEqual(rpc.call(self.config, "compute", "method", 1, 2), 3)
        self.assertTrue(FakeConnection.created[0].closed)
        self.assertEqual(FakeConnection.created[0].sent, [(1, 1)])

    def test_deadline_times_out_the_rest_and_drops_the_connection(self):
        def first_only(connection, args):
            return (sum(args), None) if args == (0, 0) else FakeConnection.NO_REPLY

        self.behaviour = first_only
        args = [(i, i) for i in range(client.BATCH_CHUNK_SIZE + 5)]
        outcomes = rpc.call_many(self.config, "compute", "method", args)
        self.assertEqual(len(outcomes), len(args))
        self.assertEqual(outcomes[0].value, 0)
        for outcome in outcomes[1:]:
            self.assertIsInstance(outcome.error, rpc.ServiceTimeout)
            self.assertEqual(outcome.error.params["timeout"], self.config.timeout)
        # The second chunk is never sent: it would only pile up on a frozen service.
        self.assertEqual(len(FakeConnection.created[0].sent), client.BATCH_CHUNK_SIZE)
        self.assertTrue(FakeConnection.created[0].closed)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_refused_requests_are_sent_again_after_a_growing_pause(self):
        refusals = {(3, 3): 2}  # a queue without a leader nacks twice, then takes the request

        def refuse_twice(connection, args):
            if refusals.get(args):
                refusals[args] -= 1
                return FakeConnection.REFUSED
            return sum(args), None

        self.behaviour = refuse_twice
        args = [(i, i) for i in range(5)]
        outcomes = rpc.call_many(self.config, "compute", "method", args, resend=False)
        self.assertEqual([outcome.value for outcome in outcomes], [a + b for a, b in args])
        connection = FakeConnection.created[0]
        self.assertEqual(connection.sent, args + [(3, 3), (3, 3)])  # only the refused again
        self.assertEqual(connection.pauses, [client.REFUSED_RETRY_PAUSE,
                                             2 * client.REFUSED_RETRY_PAUSE])
        self.assertEqual(len(FakeConnection.created), 1)

    def test_requests_refused_until_the_deadline_time_out(self):
        self.behaviour = lambda connection, args: (
            FakeConnection.REFUSED if args == (1, 1) else (sum(args), None))
        self.config = rpc.BridgeConfig(self.config.broker_url, 10.0, False)
        outcomes = rpc.call_many(self.config, "compute", "method", [(0, 0), (1, 1)])
        self.assertEqual(outcomes[0].value, 0)
        self.assertIsInstance(outcomes[1].error, rpc.RequestsNotAccepted)
        pauses = FakeConnection.created[0].pauses
        self.assertLessEqual(sum(pauses), self.config.timeout)
        self.assertEqual(max(pauses), client.REFUSED_RETRY_MAX_PAUSE)

    def test_requests_the_broker_never_confirmed_are_not_accepted(self):
        """Past the deadline, a request the broker never confirmed (its queue lost its quorum)
        says so, instead of blaming a busy service."""
        self.behaviour = lambda connection, args: {
            (0, 0): (0, None), (1, 1): FakeConnection.NO_REPLY}.get(
                args, FakeConnection.NOT_ACCEPTED)
        outcomes = rpc.call_many(self.config, "compute", "method", [(0, 0), (1, 1), (2, 2)])
        self.assertEqual(outcomes[0].value, 0)
        self.assertIs(type(outcomes[1].error), rpc.ServiceTimeout)
        self.assertIsInstance(outcomes[2].error, rpc.RequestsNotAccepted)
        self.assertIsInstance(outcomes[2].error, rpc.ServiceTimeout)  # retried alike
        self.assertIn("did not accept the requests", str(outcomes[2].error))
        self.assertNotIn(SECRET, str(outcomes[2].error))

    def test_unroutable_request_is_service_unavailable(self):
        def returned(connection, args):
            raise nameko_amqp.UnroutableRequest()

        self.behaviour = returned
        with self.assertRaises(rpc.ServiceUnavailable) as caught:
            rpc.call(self.config, "compute", "method", 1, 1)
        self.assertEqual(caught.exception.params["service"], "compute")
        self.assertNotIn(SECRET, str(caught.exception))

    def test_remote_errors_per_request(self):
        def remote(connection, args):
            if args == ("a", 1):
                return None, ("InvalidOperand", "value1 bad")
            if args == (0, 0):
                return None, ("ZeroDivisionError", "boom")
            return sum(args), None

        self.behaviour = remote
        outcomes = rpc.call_many(self.config, "compute", "method", [("a", 1), (0, 0), (1, 2)])
        self.assertIsInstance(outcomes[0].error, rpc.InvalidOperands)
        self.assertIsInstance(outcomes[1].error, rpc.RemoteFailure)
        self.assertEqual(outcomes[1].error.params["exc_type"], "ZeroDivisionError")
        self.assertEqual(outcomes[2].value, 3)
        self.assertEqual(self.pool.idle_count(), 1)  # remote errors leave the connection usable


class TestPublishCutByTheDeadline(BaseCase):
    """py-amqp reports a socket timeout during a publish as "basic_publish: timed out" (a
    connection error): past the deadline it is the deadline, and must not fail the batch as
    an unreachable broker."""

    def connection(self, seconds):
        class Channel:
            def basic_publish(self, *args, **kwargs):
                import amqp

                raise amqp.exceptions.RecoverableConnectionError("basic_publish: timed out")

        connection = object.__new__(nameko_amqp.RpcConnection)
        connection.deadline = nameko_amqp.Deadline(seconds)
        connection.reply_to = "reply"
        connection._publisher = Channel()
        return connection

    def test_after_the_deadline_it_is_the_deadline(self):
        with self.assertRaises(nameko_amqp.DeadlineExceeded):
            self.connection(-1).send("compute", "method", (1, 1))

    def test_before_the_deadline_it_is_the_connection(self):
        import amqp

        with self.assertRaises(amqp.exceptions.RecoverableConnectionError) as caught:
            self.connection(60).send("compute", "method", (1, 1))
        self.assertNotIsInstance(caught.exception, nameko_amqp.DeadlineExceeded)


class TestDeadline(BaseCase):
    """Real sockets, no broker: a peer that accepts and then stalls or dribbles must not hold a
    call past its timeout (plus :data:`MARGIN`), and the failure must read well."""

    def assert_fails_within_deadline(self, url):
        config = rpc.BridgeConfig(url, DEADLINE_TIMEOUT, False)
        done = call_within(
            self, DEADLINE_TIMEOUT + MARGIN, rpc.call, config, "compute", "method", 1, 1)
        error = done.get("error")
        self.assertIsInstance(error, rpc.BrokerUnreachable, repr(done))
        self.assertNotIn(SECRET, str(error))
        self.assertIn("guest:***@127.0.0.1", str(error))

    def test_peer_that_never_answers(self):
        peer = MisbehavingPeer(drip=False)
        self.addCleanup(peer.close)
        self.assert_fails_within_deadline(peer.url)

    def test_peer_that_dribbles_one_byte_at_a_time(self):
        peer = MisbehavingPeer(drip=True)
        self.addCleanup(peer.close)
        self.assert_fails_within_deadline(peer.url)


class TestBrokerUrls(BaseCase):
    MALFORMED = [
        "http://guest:%s@localhost:5672" % SECRET,
        "redis://guest:%s@localhost:6379/0" % SECRET,
        "pyamqp://guest:%s@localhost:99999" % SECRET,
        "pyamqp://guest:%s@localhost:0" % SECRET,
        "pyamqp://guest:%s@localhost:port" % SECRET,
        "pyamqp://guest:%s@[::1" % SECRET,
        "pyamqp://guest:%s@%s:5672" % (SECRET, "h" * 300),
        "pyamqp://guest:%s@localhost/%s" % (SECRET, "v" * 100_000),
        "abc",
        # a password with "/" (base64) unencoded: the URL parser takes it for the host
        "pyamqp://guest:Zm9v/%s+=@localhost:5672/vh" % SECRET,
    ]

    def test_malformed_url_is_a_readable_bridge_error(self):
        for url in self.MALFORMED:
            with self.subTest(url=url[:60]):
                config = rpc.BridgeConfig(url, DEADLINE_TIMEOUT, False)
                with self.assertRaises(rpc.BrokerUnreachable) as caught:
                    rpc.call(config, "compute", "method", 1, 1)
                message = str(caught.exception)
                self.assertIsInstance(caught.exception, rpc.InvalidBrokerUrl)
                self.assertEqual(set(caught.exception.params), {"broker", "detail"})
                self.assertNotIn(SECRET, message)
                self.assertLess(len(message), 1000)

    def test_failover_list_hides_every_password(self):
        """Both brokers refuse the connection: the error names both, neither password."""
        ports = []
        for _ in range(2):
            with socket.socket() as probe:  # a port nothing listens on
                probe.bind(("127.0.0.1", 0))
                ports.append(probe.getsockname()[1])
        url = ";".join("pyamqp://guest:%s-%d@127.0.0.1:%d/vh" % (SECRET, index, port)
                       for index, port in enumerate(ports))
        with self.assertLogs("odoo.addons.compute_bridge.rpc", level="INFO") as logs:
            with self.assertRaises(rpc.BrokerUnreachable) as caught:
                rpc.call(rpc.BridgeConfig(url, DEADLINE_TIMEOUT, False), "compute", "method", 1, 1)
        for text in [str(caught.exception), *logs.output]:
            self.assertNotIn(SECRET, text)
        self.assertIn("guest:***@127.0.0.1:%d/vh, 127.0.0.1:%d" % tuple(ports),
                      str(caught.exception))

    def test_urls_mean_what_they_mean_to_kombu(self):
        parse_broker_url = nameko_amqp.parse_broker_url
        self.assertEqual(parse_broker_url("pyamqp://rabbit")["host"], "rabbit:5672")
        self.assertEqual(parse_broker_url("amqps://rabbit")["host"], "rabbit:5671")
        self.assertEqual(parse_broker_url("amqp://u:p@rabbit//")["virtual_host"], "/")
        self.assertEqual(parse_broker_url("amqp://u:p@rabbit/a%2Fb")["virtual_host"], "a/b")
        self.assertEqual(parse_broker_url("amqp://[::1]:5673")["host"], "[::1]:5673")
        defaults = parse_broker_url("amqp://rabbit")
        self.assertEqual((defaults["userid"], defaults["password"]), ("guest", "guest"))

"""The pure-Python RPC layer, without Odoo's ORM and (here only) with fakes for nameko.

These tests check the decisions the client makes (retry once, discard after a timeout, map
errors, chunk batches, fork safety); tests/test_rpc_live.py checks the same against RabbitMQ.
"""

import ast
import doctest
import os
import pathlib
import subprocess
import sys
import threading
import types
from unittest import mock

from odoo.tests import BaseCase

from .. import rpc
from ..rpc import client, config, errors, pool

RPC_DIR = pathlib.Path(rpc.__file__).parent


class FakeConnectionError(OSError):
    pass


class FakeTimeout(Exception):
    pass


class FakeUnknownService(Exception):
    pass


class FakeRemoteError(Exception):
    def __init__(self, exc_type, value):
        super().__init__(value)
        self.exc_type = exc_type
        self.value = value


FAKE_SUPPORT = types.SimpleNamespace(
    connection_errors=(FakeConnectionError,),
    RpcTimeout=FakeTimeout,
    UnknownService=FakeUnknownService,
    RemoteError=FakeRemoteError,
)


class FakeReply:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class FakeRpcConnection:
    """Stands for a started ClusterRpcProxy: ``behaviour(args)`` gives each reply."""

    created = []

    def __init__(self, key, behaviour):
        self.key = key
        self.behaviour = behaviour
        self.closed = False
        self.alive = True
        self.sent = []
        self.proxy = {"compute": types.SimpleNamespace(method=types.SimpleNamespace(
            call_async=self.call_async))}
        FakeRpcConnection.created.append(self)

    def call_async(self, *args):
        self.sent.append(args)
        return self.behaviour(self, args)

    def is_alive(self):
        return self.alive

    def close(self):
        self.closed = True


class RpcCoreCase(BaseCase):
    def setUp(self):
        super().setUp()
        FakeRpcConnection.created = []
        self.behaviour = lambda connection, args: FakeReply(sum(args))
        self.pool = pool.ProxyPool(lambda key: FakeRpcConnection(
            key, lambda connection, args: self.behaviour(connection, args)))
        patches = [
            mock.patch.object(client, "_POOL", self.pool),
            mock.patch.object(client, "_nameko_support", lambda: FAKE_SUPPORT),
        ]
        for patcher in patches:
            patcher.start()
            self.addCleanup(patcher.stop)
        self.config = rpc.BridgeConfig("pyamqp://guest:secret@broker", 2.0, False)


class TestConfig(BaseCase):
    def test_doctests(self):
        for module in (config, pool):
            failures, _tried = doctest.testmod(module)
            self.assertEqual(failures, 0, module.__name__)

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
    def test_tree(self):
        for cls in (errors.BrokerUnreachable, errors.ServiceUnavailable,
                    errors.ServiceTimeout, errors.InvalidOperands, errors.RemoteFailure):
            self.assertTrue(issubclass(cls, errors.BridgeError))
        self.assertFalse(errors.InvalidOperands.retryable)
        self.assertEqual(str(errors.ServiceTimeout("no reply")), "no reply")


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
        proxy_pool = pool.ProxyPool(lambda key: made.append(key) or mock.Mock(), max_idle=2)
        items = [proxy_pool.acquire(("url", 1.0)) for _ in range(3)]
        for item in items:
            proxy_pool.release(item)
        self.assertEqual(proxy_pool.idle_count(("url", 1.0)), 2)
        items[2].resource.close.assert_called_once()
        self.assertFalse(proxy_pool.acquire(("url", 2.0)).reused)  # a new timeout, a new key
        self.assertTrue(proxy_pool.acquire(("url", 1.0)).reused)

    def test_thread_safe_checkout(self):
        proxy_pool = pool.ProxyPool(lambda key: mock.Mock(), max_idle=100)
        in_use, clashes = set(), []
        lock = threading.Lock()

        def worker():
            for _ in range(200):
                item = proxy_pool.acquire("k")
                with lock:
                    if id(item) in in_use:
                        clashes.append(item)
                    in_use.add(id(item))
                with lock:
                    in_use.discard(id(item))
                proxy_pool.release(item)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(clashes, [])

    def test_stale_idle_items_are_closed(self):
        proxy_pool = pool.ProxyPool(lambda key: mock.Mock(), max_idle_seconds=0)
        first = proxy_pool.acquire("k")
        proxy_pool.release(first)
        second = proxy_pool.acquire("k")
        self.assertIsNot(first, second)
        first.resource.close.assert_called_once()

    def test_child_process_forgets_parent_proxies_without_closing_them(self):
        parent_resource = mock.Mock()
        proxy_pool = pool.ProxyPool(lambda key: parent_resource)
        proxy_pool.release(proxy_pool.acquire("k"))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what would a prefork worker get?
            try:
                proxy_pool.after_fork_in_child()  # what os.register_at_fork runs for _POOL
                answer = b"%d,%d" % (proxy_pool.idle_count(), parent_resource.close.call_count)
                os.write(write_end, answer)
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        answer = os.read(read_end, 100)
        os.close(read_end)
        self.assertEqual(answer, b"0,0")
        self.assertEqual(proxy_pool.idle_count(), 1)  # the parent keeps its own

    def test_pid_check_catches_unannounced_fork(self):
        proxy_pool = pool.ProxyPool(lambda key: mock.Mock())
        item = proxy_pool.acquire("k")
        proxy_pool.release(item)
        with mock.patch.object(pool.os, "getpid", return_value=os.getpid() + 1):
            self.assertEqual(proxy_pool.idle_count(), 0)
            self.assertFalse(proxy_pool.acquire("k").reused)
        item.resource.close.assert_not_called()

    def test_fork_hook_registered_for_client_pool(self):
        with mock.patch.object(client._POOL, "after_fork_in_child") as hook:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if hook.called else 1)
            _pid, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


class TestClient(RpcCoreCase):
    def test_batch_in_chunks_on_one_pooled_proxy(self):
        outcomes = rpc.call_many(self.config, "compute", "method",
                                 [(i, i) for i in range(5)], chunk_size=2)
        self.assertEqual([outcome.value for outcome in outcomes], [0, 2, 4, 6, 8])
        self.assertEqual(len(FakeRpcConnection.created), 1)
        self.assertEqual(len(FakeRpcConnection.created[0].sent), 5)

    def test_connection_error_on_pooled_proxy_retries_once_on_fresh_one(self):
        rpc.call(self.config, "compute", "method", 1, 1)  # leaves one idle proxy

        def dies_once(connection, args):
            if connection is FakeRpcConnection.created[0]:
                raise FakeConnectionError("connection reset")
            return FakeReply(sum(args))

        self.behaviour = dies_once
        self.assertEqual(rpc.call(self.config, "compute", "method", 2, 3), 5)
        self.assertTrue(FakeRpcConnection.created[0].closed)
        self.assertEqual(len(FakeRpcConnection.created), 2)

    def test_connection_error_on_fresh_proxy_is_broker_unreachable(self):
        def refuse(connection, args):
            raise FakeConnectionError("refused by pyamqp://guest:secret@broker")

        self.behaviour = refuse
        with self.assertRaises(rpc.BrokerUnreachable) as caught:
            rpc.call(self.config, "compute", "method", 1, 1)
        self.assertNotIn("secret", str(caught.exception))
        self.assertIn("guest:***@broker", str(caught.exception))
        self.assertEqual(len(FakeRpcConnection.created), 1)  # no retry

    def test_dead_idle_proxy_is_replaced_before_use(self):
        rpc.call(self.config, "compute", "method", 1, 1)
        FakeRpcConnection.created[0].alive = False
        self.assertEqual(rpc.call(self.config, "compute", "method", 1, 2), 3)
        self.assertTrue(FakeRpcConnection.created[0].closed)
        self.assertEqual(FakeRpcConnection.created[0].sent, [(1, 1)])

    def test_timeout_fails_rest_of_chunk_and_discards_proxy(self):
        self.behaviour = lambda connection, args: FakeReply(error=FakeTimeout())
        outcomes = rpc.call_many(self.config, "compute", "method", [(1, 1), (2, 2)])
        self.assertTrue(all(isinstance(o.error, rpc.ServiceTimeout) for o in outcomes))
        self.assertEqual(len(FakeRpcConnection.created), 1)  # no retry
        self.assertTrue(FakeRpcConnection.created[0].closed)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_unknown_service(self):
        def unknown(connection, args):
            raise FakeUnknownService("compute")

        self.behaviour = unknown
        with self.assertRaises(rpc.ServiceUnavailable):
            rpc.call(self.config, "compute", "method", 1, 1)

    def test_remote_errors_per_request(self):
        def remote(connection, args):
            if args == ("a", 1):
                return FakeReply(error=FakeRemoteError("InvalidOperand", "value1 bad"))
            if args == (0, 0):
                return FakeReply(error=FakeRemoteError("ZeroDivisionError", "boom"))
            return FakeReply(sum(args))

        self.behaviour = remote
        outcomes = rpc.call_many(self.config, "compute", "method", [("a", 1), (0, 0), (1, 2)])
        self.assertIsInstance(outcomes[0].error, rpc.InvalidOperands)
        self.assertIsInstance(outcomes[1].error, rpc.RemoteFailure)
        self.assertEqual(outcomes[1].error.exc_type, "ZeroDivisionError")
        self.assertEqual(outcomes[2].value, 3)
        self.assertEqual(self.pool.idle_count(), 1)  # remote errors leave the proxy usable

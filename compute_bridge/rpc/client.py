"""Calling a Nameko service: one call, or many at once, over pooled proxies.

A reader follows a call here: :func:`call_many` → :func:`_with_proxy` (pool checkout, one retry on
a fresh connection) → :func:`_send_and_collect` (``call_async`` for each request, then the
replies) → :func:`_as_bridge_error` (library exceptions → :mod:`.errors`).

nameko, kombu and eventlet are imported by :func:`_nameko_support` on the first call, never at
import time: Odoo's gevent process imports this addon and must never load eventlet.

How long a call may take, worst case, with ``timeout`` from the configuration:

- broker unreachable: one connection attempt bounded by ``timeout`` plus one immediate retry
  (kombu's own implicit retry waits 2 s first; ours does not) — refused connections fail in
  milliseconds;
- unknown service (no queue bound): immediate, the broker returns the message;
- queue without consumer, or slow service: ``timeout`` per chunk, then the proxy is dropped.
"""

import atexit
import collections
import logging
import os
import select
import sys
import threading
import time

from .config import mask_url
from .errors import (
    BrokerUnreachable,
    InvalidOperands,
    RemoteFailure,
    ServiceTimeout,
    ServiceUnavailable,
)
from .pool import ProxyPool

_logger = logging.getLogger(__name__)

IMPORT_TIMEOUT = 60  # seconds; a cold import of nameko, kombu and eventlet takes ~1 s
BATCH_CHUNK_SIZE = 200  # requests in flight on one proxy before we collect their replies
CONNECT_RETRIES = 1  # one immediate retry of the first connection (a broker restarting)
LIVENESS_PROBE_SECONDS = 0.001  # read bound once select() said the idle socket is readable
PUBLISH_RETRY_POLICY = {  # publishing on a dropped connection: reconnect once, at once
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}
REMOTE_INVALID_OPERAND = "InvalidOperand"  # exc_type the compute service raises (its contract)
# A service whose queue the broker confirmed routing to within this many seconds is called
# without waiting for a publish confirm (one broker round trip less per click). The queue is
# durable: it stays while no instance runs, so only an administrator deleting it would turn an
# immediate "not running" into a timeout, for at most this long.
KNOWN_SERVICE_TTL = 60.0
# Requests are sent transient: one outliving a broker restart would answer a reply queue that
# died with it. Unacknowledged requests are still redelivered to another instance.
REQUEST_DELIVERY_MODE = 1  # AMQP non-persistent

CallOutcome = collections.namedtuple("CallOutcome", ["value", "error", "duration_ms"])
CallOutcome.__doc__ = """One request's reply: ``value`` on success, else ``error`` (a
:class:`.errors.BridgeError`); ``duration_ms`` from sending the chunk to collecting this reply."""

_support = None
_support_lock = threading.Lock()
_known_services = {}  # (broker URL, service) -> time.monotonic() of the last confirmed routing


def call(config, service, method, *args):
    """Call ``service.method(*args)`` and return its result, or raise a ``BridgeError``."""
    outcome = call_many(config, service, method, [args])[0]
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def call_many(config, service, method, args_list, chunk_size=BATCH_CHUNK_SIZE):
    """Call ``service.method(*args)`` for each ``args`` in ``args_list``; one outcome each.

    Requests are sent with ``call_async`` on one proxy, ``chunk_size`` at a time, then their
    replies are collected, so N records cost about one round trip per chunk, not N.
    A failure of the whole batch (broker unreachable, unknown service) raises a ``BridgeError``;
    a failure of one request (remote error, timeout) is in its outcome.
    """
    outcomes = []
    for start in range(0, len(args_list), chunk_size):
        chunk = args_list[start : start + chunk_size]
        outcomes.extend(
            _with_proxy(config, lambda proxy, chunk=chunk: _send_and_collect(
                proxy, config, service, method, chunk))
        )
    return outcomes


def test_connection(config):
    """Open (or reuse) a connection to the broker; raise ``BrokerUnreachable`` if impossible.

    Says nothing about the services: see :func:`call` for that.
    """
    _with_proxy(config, lambda proxy: None)


def close_pool():
    """Stop every idle proxy of this process (atexit; tests)."""
    _POOL.close_all()


# ---------------------------------------------------------------------------------------------
class _DiscardProxy(Exception):
    """The work is done (``result``) but the proxy may still receive late replies: drop it."""

    def __init__(self, result):
        super().__init__("proxy must not be reused")
        self.result = result


def _with_proxy(config, work):
    """Run ``work(proxy)`` on a pooled proxy and return its result.

    A connection error on a *reused* proxy means the connection died while idle (broker
    restart, idle timeout): discard it and run once more on a fresh connection. On a fresh
    connection it means the broker is unreachable, and retrying would only double the wait.
    """
    support = _nameko_support()
    key = (config.broker_url, config.timeout)
    retried = False
    while True:
        item = _checkout(support, config, key)
        try:
            result = work(item.resource.proxy)
        except support.connection_errors as error:
            _POOL.discard(item)
            if item.reused and not retried:
                retried = True
                _logger.warning(
                    "connection to %s lost (%s); retrying once on a new connection",
                    mask_url(config.broker_url), type(error).__name__,
                )
                continue
            raise _broker_unreachable(config, error) from error
        except _DiscardProxy as done:
            _POOL.discard(item)
            return done.result
        except BaseException:
            _POOL.discard(item)
            raise
        _POOL.release(item)
        return result


def _checkout(support, config, key):
    """A started proxy for ``key``: an idle one that passes the liveness probe, or a new one."""
    while True:
        try:
            item = _POOL.acquire(key)
        except support.connection_errors as error:
            raise _broker_unreachable(config, error) from error
        if not item.reused or item.resource.is_alive():
            return item
        _logger.info("idle connection to %s was closed; reconnecting", mask_url(config.broker_url))
        _POOL.discard(item)


def _send_and_collect(proxy, config, service, method, chunk):
    """Send every request of ``chunk`` with ``call_async``, then collect the replies in order."""
    support = _nameko_support()
    confirmed = getattr(proxy[service], method)
    unconfirmed = getattr(proxy, "unconfirmed", None)  # absent on test doubles: all confirmed
    pipelined = getattr(unconfirmed(service), method) if unconfirmed else confirmed
    started = time.monotonic()
    known_key = (config.broker_url, service)
    known = started - _known_services.get(known_key, -KNOWN_SERVICE_TTL) < KNOWN_SERVICE_TTL
    replies = []
    for index, args in enumerate(chunk):
        # Only the first request waits for its publish confirm: with the mandatory flag, that
        # is what detects an unknown service (the broker returns the message before it
        # confirms). The others are sent without waiting (their confirms were 56% of a batch's
        # time); one lost on the way surfaces as the chunk's ServiceTimeout.
        method_proxy = pipelined if index or known else confirmed
        try:
            replies.append(method_proxy.call_async(*args))
        except support.UnknownService as error:
            _known_services.pop(known_key, None)
            raise ServiceUnavailable(
                "The service %r is not running: the broker at %s has no queue for it."
                % (service, mask_url(config.broker_url))
            ) from error
    if not known:
        _known_services[known_key] = time.monotonic()
    outcomes = []
    timed_out = None
    for reply in replies:
        if timed_out is None:
            try:
                outcomes.append(CallOutcome(reply.result(), None, _ms_since(started)))
                continue
            except support.RpcTimeout:
                timed_out = ServiceTimeout(
                    "No reply from %s.%s within %g s (broker %s): the service is busy or not "
                    "consuming its queue." % (service, method, config.timeout,
                                              mask_url(config.broker_url))
                )
            except support.RemoteError as error:
                outcomes.append(
                    CallOutcome(None, _remote_error(service, method, error), _ms_since(started))
                )
                continue
        # After a timeout the rest of the chunk shares its fate: waiting `timeout` again for
        # each request would hold the Odoo worker for N times the timeout.
        outcomes.append(CallOutcome(None, timed_out, _ms_since(started)))
    if timed_out is not None:
        raise _DiscardProxy(outcomes)
    return outcomes


def _remote_error(service, method, error):
    if error.exc_type == REMOTE_INVALID_OPERAND:
        return InvalidOperands("%s.%s refused the operands: %s" % (service, method, error.value))
    return RemoteFailure(
        "%s.%s failed with %s: %s" % (service, method, error.exc_type, error.value),
        exc_type=error.exc_type,
    )


def _broker_unreachable(config, error):
    masked = mask_url(config.broker_url)
    detail = _scrub("%s: %s" % (type(error).__name__, error), config.broker_url)
    _logger.warning("message broker %s unreachable: %s", masked, detail)
    return BrokerUnreachable("Cannot reach the message broker at %s (%s)." % (masked, detail))


def _scrub(text, url):
    """Library errors may quote the URL; never let its password through."""
    text = text.replace(url, mask_url(url))
    password = _password_of(url)
    return text.replace(password, "***") if password else text


def _password_of(url):
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _ms_since(started):
    return (time.monotonic() - started) * 1000.0


# ---------------------------------------------------------------------------------------------
class _RpcConnection:
    """A started nameko ``ClusterRpcProxy`` (one AMQP connection and reply queue) for the pool."""

    def __init__(self, key):
        broker_url, timeout = key
        support = _nameko_support()
        self._standalone = support.BridgeRpcProxy({"AMQP_URI": broker_url}, timeout=timeout)
        try:
            self.proxy = self._standalone.start()
        except BaseException:
            self.close()
            raise
        self._consumer = self._standalone._reply_listener.queue_consumer

    def is_alive(self):
        """A live idle connection has nothing to say: probe its socket without blocking
        (``select`` with a zero timeout) and read only when it is readable. A connection the
        broker closed is readable (end-of-file), and reading it raises. What the probe misses
        (a peer gone without a FIN) is caught by the one retry in :func:`_with_proxy`."""
        support = _nameko_support()
        connection = self._consumer.connection
        if not connection.connected:
            return False
        try:
            readable, _, _ = select.select([connection.connection.sock], [], [], 0)
            if not readable:
                return True
            connection.drain_events(timeout=LIVENESS_PROBE_SECONDS)
        except TimeoutError:  # socket.timeout: a partial frame, nothing more to read yet
            return True
        except (support.connection_errors + (ValueError, AttributeError)):
            return False  # ValueError/AttributeError: the socket is already closed or gone
        return True  # a stray frame was read: the connection works

    def close(self):
        """Delete the reply queue, then stop. nameko declares it with ``x-expires`` (5 min), not
        auto-delete: without the delete, every proxy closed leaves a queue on the broker for 5
        minutes. ``nowait``: one frame written, no reply awaited, so a dead broker cannot hold
        us here; the broker runs it before the connection close that follows on the socket."""
        support = _nameko_support()
        consumer = getattr(self, "_consumer", None)
        if consumer is not None and consumer.connection.connected:
            try:
                consumer.queue.channel.queue_delete(queue=consumer.queue.name, nowait=True)
            except support.connection_errors + (AttributeError,) as error:
                _logger.debug("deleting the reply queue failed: %s", type(error).__name__)
        try:
            self._standalone.stop()
        except support.connection_errors as error:
            _logger.debug("closing a dead RPC connection: %s", type(error).__name__)


def _nameko_support():
    """nameko and kombu, imported on the first call and adapted once.

    Two adaptations, both about bounding time:

    - ``BoundedPollingQueueConsumer``: nameko's reply consumer connects through kombu's implicit
      connect, which uses a 5 s socket timeout and retries once after 2 s. We connect first,
      bounded by the RPC timeout, retrying at once.
    - ``BoundedClusterProxy``: gives each service proxy :data:`PUBLISH_RETRY_POLICY` (nameko's
      default waits between three retries).
    """
    global _support
    with _support_lock:
        if _support is None:
            _first_import_off_request_thread()
            _support = _build_support()
    return _support


def _first_import_off_request_thread():
    """Import eventlet (through nameko) for the first time in a daemon thread.

    eventlet's first import makes a fresh copy of the ``threading`` module, which takes over the
    end-of-thread lock of the thread that imports it: that thread then never counts as finished,
    and a process whose first call ran in an Odoo request thread hangs at exit, waiting for it.
    A daemon thread that imports and is left behind is never waited for. In the main thread
    (prefork workers, scripts) nothing is taken over that matters, so we import there directly.
    """
    if "eventlet" in sys.modules or threading.current_thread() is threading.main_thread():
        return
    imported = threading.Event()

    def import_nameko():
        try:
            import nameko.standalone.rpc  # noqa: F401  pylint: disable=unused-import
        finally:
            imported.set()

    threading.Thread(target=import_nameko, name="compute_bridge-import", daemon=True).start()
    # The caller imports again right after: a failed import raises there, with its real error.
    imported.wait(IMPORT_TIMEOUT)


def _build_support():
    import types

    from amqp.exceptions import AccessRefused
    from kombu import Connection
    from kombu.exceptions import OperationalError
    from nameko.amqp.publish import Publisher
    from nameko.constants import DEFAULT_TRANSPORT_OPTIONS
    from nameko.exceptions import RemoteError, RpcTimeout, UnknownService
    from nameko.rpc import MethodProxy, ServiceProxy
    from nameko.standalone.rpc import (
        ClusterProxy,
        ClusterRpcProxy,
        PollingQueueConsumer,
        SingleThreadedReplyListener,
    )

    class BoundedPollingQueueConsumer(PollingQueueConsumer):
        def _setup_consumer(self):
            if not self.connection.connected:
                self.connection.connect_timeout = self.timeout
                self.connection.ensure_connection(
                    max_retries=CONNECT_RETRIES, interval_start=0, interval_step=0,
                    interval_max=0, timeout=self.timeout,
                )
            return super()._setup_consumer()

    class BoundedReplyListener(SingleThreadedReplyListener):
        def __init__(self, timeout=None):
            super().__init__(timeout=timeout)
            self.queue_consumer = BoundedPollingQueueConsumer(timeout=timeout)

    class UnconfirmedPublisher(Publisher):
        """Publishes without waiting for the broker's confirm. Without a confirm an unroutable
        message cannot be detected, so it is not sent ``mandatory`` (nameko would warn on every
        call). A fresh ``transport_options`` per publish: nameko writes ``confirm_publish``
        into the dict it is given, by default a class attribute shared with the confirmed
        publishers of other threads."""

        use_confirms = False

        def publish(self, payload, **kwargs):
            kwargs["mandatory"] = False
            kwargs.setdefault("transport_options", dict(DEFAULT_TRANSPORT_OPTIONS))
            return super().publish(payload, **kwargs)

    class UnconfirmedMethodProxy(MethodProxy):
        publisher_cls = UnconfirmedPublisher

    class UnconfirmedServiceProxy(ServiceProxy):
        def __getattr__(self, name):
            return UnconfirmedMethodProxy(
                self.worker_ctx, self.service_name, name, self.reply_listener, **self.options)

    class BoundedClusterProxy(ClusterProxy):
        def __init__(self, worker_ctx, reply_listener):
            super().__init__(worker_ctx, reply_listener)
            self._unconfirmed = {}

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return self._service_proxy(self._proxies, ServiceProxy, name)

        def unconfirmed(self, name):
            """The proxy of service ``name`` whose calls do not wait for publish confirms."""
            return self._service_proxy(self._unconfirmed, UnconfirmedServiceProxy, name)

        def _service_proxy(self, cache, proxy_cls, name):
            if name not in cache:
                cache[name] = proxy_cls(
                    self._worker_ctx, name, self._reply_listener,
                    retry_policy=dict(PUBLISH_RETRY_POLICY),
                    delivery_mode=REQUEST_DELIVERY_MODE,
                )
            return cache[name]

    class BridgeRpcProxy(ClusterRpcProxy):
        def __init__(self, config, timeout):
            super().__init__(config, timeout=timeout, reply_listener_cls=BoundedReplyListener)
            self._proxy = BoundedClusterProxy(self._worker_ctx, self._reply_listener)

    # What "the broker cannot be used" looks like from kombu/amqp: socket errors, AMQP
    # connection errors, kombu's wrapper, and a refused login (a channel error in amqp).
    connection_errors = tuple(Connection("pyamqp://").connection_errors) + (
        OperationalError,
        AccessRefused,
    )
    return types.SimpleNamespace(
        BridgeRpcProxy=BridgeRpcProxy,
        RemoteError=RemoteError,
        RpcTimeout=RpcTimeout,
        UnknownService=UnknownService,
        connection_errors=connection_errors,
    )


# ---------------------------------------------------------------------------------------------
_POOL = ProxyPool(_RpcConnection)


def _after_fork_in_child():
    """Prefork workers: forget the parent's proxies and kombu's pooled publisher connections
    (kombu clears its pools after ``multiprocessing`` forks only, not after ``os.fork``)."""
    _POOL.after_fork_in_child()
    kombu_pools = sys.modules.get("kombu.pools")
    if kombu_pools is not None:
        kombu_pools.connections.clear()
        kombu_pools.producers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_pool)

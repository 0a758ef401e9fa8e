"""RPC connections kept per Odoo worker process, so a button press does not pay for a new
AMQP connection and reply queue each time.

- **Thread-safe**: Odoo's threaded server serves requests in threads. A connection is
  single-threaded, so it is *checked out* by one thread at a time; the pool only guards its idle
  lists.
- **Fork-safe**: prefork workers are forked from a parent. A child must never talk on its
  parent's sockets (two processes writing AMQP frames on one TCP stream corrupt both), nor close
  them (that would close the parent's connection). After a fork the inherited connections are
  forgotten, not stopped. ``os.register_at_fork`` does this at once; the pid check at every
  checkout is the fallback for forks it does not see.
- **Keyed** by broker URL: a Settings change takes effect at the next call, and old idle
  connections age out.
- **Checked**: an idle connection is reused only if ``is_alive()`` says so.
- **Bounded**: at most :data:`MAX_IDLE_PER_KEY` idle connections per key; extras are closed on
  return. Idle connections older than :data:`MAX_IDLE_SECONDS` are dropped rather than reused.
- **Closed on shutdown** through ``atexit`` (see :mod:`.client`).

The pool knows nothing about AMQP: ``factory(key, *args)`` returns an object with ``is_alive()``,
``close()`` (politely) and ``abort()`` (at once, when its state is unknown).
"""

import logging
import os
import threading
import time

_logger = logging.getLogger(__name__)

# Odoo's threaded server (workers = 0) serves each HTTP request in a thread of its own, a handful
# to a dozen busy at once. Below the steady concurrency, each extra caller opens and closes a
# connection (and its reply queue) per call; above it, idle connections only hold a socket each
# until MAX_IDLE_SECONDS. A prefork worker serves one request at a time and keeps one.
MAX_IDLE_PER_KEY = 16
MAX_IDLE_SECONDS = 300  # brokers and firewalls drop idle AMQP connections; don't reuse old ones


class PooledItem:
    """One checked-out resource and where it came from. ``reused`` is True when it had already
    served a call: only a reused connection is worth retrying after a connection error."""

    __slots__ = ("key", "resource", "pid", "reused", "idle_since")

    def __init__(self, key, resource, reused=False):
        self.key = key
        self.resource = resource
        self.pid = os.getpid()
        self.reused = reused
        self.idle_since = None


class ConnectionPool:
    """Idle resources per key, for one process.

    >>> closed = []
    >>> class Res:
    ...     def __init__(self, key): self.key = key
    ...     def is_alive(self): return True
    ...     def close(self): closed.append(self.key)
    >>> pool = ConnectionPool(Res, max_idle=1)
    >>> first = pool.acquire("a"); second = pool.acquire("a")
    >>> first.reused, second.reused
    (False, False)
    >>> pool.release(first); pool.release(second)   # only one may stay idle
    >>> closed
    ['a']
    >>> pool.acquire("a").reused
    True
    """

    def __init__(self, factory, max_idle=MAX_IDLE_PER_KEY, max_idle_seconds=MAX_IDLE_SECONDS):
        self._factory = factory
        self._max_idle = max_idle
        self._max_idle_seconds = max_idle_seconds
        self._lock = threading.Lock()
        self._idle = {}
        self._pid = os.getpid()

    def acquire(self, key, *args):
        """Return a :class:`PooledItem`: an idle one for ``key`` that is still alive, or a new
        one from ``factory(key, *args)``.

        Checks and the factory run outside the lock: they talk to the network, and other
        threads must not wait for them.
        """
        while True:
            with self._lock:
                self._forget_if_forked()
                idle = self._idle.get(key, [])
                item = idle.pop() if idle else None
            if item is None:
                return PooledItem(key, self._factory(key, *args))
            if time.monotonic() - item.idle_since > self._max_idle_seconds:
                self._abort(item)  # no polite close here: it would be paid by this call
            elif item.resource.is_alive():
                item.reused = True
                return item
            else:
                _logger.info("an idle RPC connection was closed by the broker; reconnecting")
                self._abort(item)

    def release(self, item):
        """Give back a healthy item; it is closed instead when the idle list is full."""
        with self._lock:
            self._forget_if_forked()
            if item.pid != self._pid:
                return  # a parent's connection reached a child: forget it, see module docstring
            idle = self._idle.setdefault(item.key, [])
            if len(idle) < self._max_idle:
                item.idle_since = time.monotonic()
                idle.append(item)
                return
        self._close(item)

    def discard(self, item):
        """Drop an item whose connection is broken or whose state is unknown (after a deadline)."""
        if item.pid == os.getpid():
            self._abort(item)

    def close_all(self):
        """Close every idle item of this process (atexit, tests)."""
        with self._lock:
            self._forget_if_forked()
            items = [item for idle in self._idle.values() for item in idle]
            self._idle = {}
        for item in items:
            self._close(item)

    def idle_count(self, key=None):
        with self._lock:
            self._forget_if_forked()
            if key is not None:
                return len(self._idle.get(key, []))
            return sum(len(idle) for idle in self._idle.values())

    def after_fork_in_child(self):
        """Forget the parent's items without closing them; new lock (it may be held mid-fork)."""
        self._lock = threading.Lock()
        self._idle = {}
        self._pid = os.getpid()

    def _forget_if_forked(self):
        # Called under the lock: a fork not seen by register_at_fork (e.g. os.fork from C code).
        if self._pid != os.getpid():
            _logger.debug("process forked: forgetting %d inherited RPC connections", sum(
                len(idle) for idle in self._idle.values()))
            self._idle = {}
            self._pid = os.getpid()

    @staticmethod
    def _close(item):
        try:
            item.resource.close()
        except OSError as error:  # the socket is already gone: nothing left to release
            _logger.debug("closing an idle RPC connection failed: %s", error)

    @staticmethod
    def _abort(item):
        item.resource.abort()

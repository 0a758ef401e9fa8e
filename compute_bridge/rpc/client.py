"""Calling a Nameko service: one call, or many at once, all within one deadline.

A call follows :func:`call_many` → :func:`_on_connection` (pool checkout, one retry on a fresh
connection) → :func:`_send_and_collect` (publish a chunk, then read its replies). The deadline is
``config.timeout`` from the moment :func:`call_many` starts, for the whole batch and whatever the
broker does: connecting, handshake, declares, publishes and replies each get only what is left
of it (:mod:`.nameko_amqp`, imported on the first call, never at import time).
"""

import atexit
import collections
import logging
import os
import time

from .errors import (
    BrokerUnreachable,
    ServiceTimeout,
    ServiceUnavailable,
    broker_label,
    remote_error,
)
from .pool import ConnectionPool
from .telemetry import observer as current_observer

_logger = logging.getLogger(__name__)

BATCH_CHUNK_SIZE = 200  # requests in flight before their replies are read (what a timeout strands)

CallOutcome = collections.namedtuple("CallOutcome", ["value", "error", "duration_ms"])
CallOutcome.__doc__ = """One request's reply: ``value`` on success, else ``error`` (a
:class:`.errors.BridgeError`); ``duration_ms`` from sending its chunk to reading its reply."""


def call(config, service, method, *args, **kwargs):
    """Call ``service.method(*args, **kwargs)`` and return its result, or raise a
    ``BridgeError``."""
    outcome = call_many(config, service, method, [args], [kwargs])[0]
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def call_many(config, service, method, args_list, kwargs_list=None):
    """Call ``service.method(*args, **kwargs)`` for each ``args`` in ``args_list`` (and the
    ``kwargs`` at the same place in ``kwargs_list``, default none); one outcome each.

    Ends within ``config.timeout`` seconds. A failure of the whole batch (broker unreachable or
    URL invalid, service not running) raises a ``BridgeError``; a failure of one request
    (remote error, no reply before the deadline) is in its outcome.
    """
    if not args_list:
        return []
    started = time.monotonic()  # before the first call's import of the AMQP libraries
    from .nameko_amqp import Deadline

    deadline = Deadline(config.timeout, started)
    requests = list(zip(args_list, kwargs_list or [{}] * len(args_list), strict=True))
    observer = current_observer()
    if observer is None:
        return _on_connection(config, deadline, service, method, requests)
    observed = observer.call_started(service, method, len(args_list))
    try:
        outcomes = _on_connection(config, deadline, service, method, requests,
                                  observer.message_headers(observed))
    except BaseException as error:
        observer.call_ended(observed, error=error)
        raise
    observer.call_ended(observed, outcomes=outcomes)
    return outcomes


def idle_connections():
    """How many connections this process's pool keeps idle (metrics)."""
    return _POOL.idle_count()


def close_pool():
    """Close every idle connection of this process (atexit; tests)."""
    _POOL.close_all()


# ---------------------------------------------------------------------------------------------
def _on_connection(config, deadline, service, method, requests, headers=None):
    """:func:`_send_and_collect` on a pooled connection.

    A connection error on a *reused* connection means it died while idle (broker restart,
    firewall): run once more on a fresh one, within the same deadline. On a fresh one the
    broker is unreachable. A connection that met the deadline is dropped, never pooled.
    """
    from .nameko_amqp import CONNECTION_ERRORS

    broker = broker_label(config.broker_url)
    try:
        item = _POOL.acquire(config.broker_url, deadline)
    except CONNECTION_ERRORS as error:
        raise _unreachable(config, deadline, error) from error
    item.resource.deadline = deadline
    item.resource.headers = headers
    try:
        outcomes, complete = _send_and_collect(item.resource, config, service, method, requests)
    except CONNECTION_ERRORS as error:
        _POOL.discard(item)
        if item.reused and not deadline.expired():
            _logger.info("connection to %s lost (%s); retrying on a new connection",
                         broker, type(error).__name__)
            return _on_connection(config, deadline, service, method, requests, headers)
        raise _unreachable(config, deadline, error) from error
    except BaseException:
        _POOL.discard(item)
        raise
    if complete:
        _POOL.release(item)
    else:  # stopped by the deadline, maybe mid-frame; late replies would come next
        _POOL.discard(item)
    return outcomes


def _send_and_collect(connection, config, service, method, requests):
    """``(outcomes, complete)``: publish ``BATCH_CHUNK_SIZE`` requests at a time and read their
    replies until the deadline; requests without a reply by then (sent or not) get a
    ``ServiceTimeout`` and ``complete`` is False."""
    from .nameko_amqp import DeadlineExceeded, UnroutableRequest

    outcomes = []
    correlation_ids = []
    sent_at = time.monotonic()
    try:
        for start in range(0, len(requests), BATCH_CHUNK_SIZE):
            sent_at = time.monotonic()
            correlation_ids = []
            for args, kwargs in requests[start:start + BATCH_CHUNK_SIZE]:
                correlation_ids.append(connection.send(service, method, args, kwargs))
            connection.collect(correlation_ids)
            outcomes.extend(_outcome(connection, correlation_id, sent_at, service, method)
                            for correlation_id in correlation_ids)
    except UnroutableRequest as error:
        raise ServiceUnavailable(service=service, broker=broker_label(config.broker_url)) from error
    except DeadlineExceeded:
        timed_out = ServiceTimeout(service=service, method=method, timeout=config.timeout,
                                   broker=broker_label(config.broker_url))
        late = CallOutcome(None, timed_out, config.timeout * 1000.0)
        outcomes.extend(
            _outcome(connection, correlation_id, sent_at, service, method)
            if correlation_id in connection.replies else late
            for correlation_id in correlation_ids
        )
        outcomes.extend([late] * (len(requests) - len(outcomes)))
        _logger.warning("%s (%d of %d requests)", timed_out,
                        sum(outcome is late for outcome in outcomes), len(requests))
        return outcomes, False
    return outcomes, True


def _outcome(connection, correlation_id, sent_at, service, method):
    value, error, arrived = connection.pop_reply(correlation_id)
    duration_ms = (arrived - sent_at) * 1000.0
    if error is not None:
        _logger.debug("%s.%s raised %s", service, method, error[0])
        return CallOutcome(None, remote_error(service, method, *error), duration_ms)
    _logger.debug("%s.%s answered in %.1f ms", service, method, duration_ms)
    return CallOutcome(value, None, duration_ms)


def _unreachable(config, deadline, error):
    if isinstance(error, TimeoutError) or deadline.expired():
        unreachable = BrokerUnreachable(broker=broker_label(config.broker_url),
                                        detail="no complete answer within %g s" % config.timeout)
    else:
        unreachable = BrokerUnreachable.from_exception(config.broker_url, error)
    _logger.warning("%s", unreachable)
    return unreachable


def _new_connection(broker_url, deadline):
    """A connection to the first broker of ``broker_url`` that accepts one before the deadline:
    kombu's failover form ``url1;url2;...`` names the nodes of a cluster, tried in turn."""
    from .config import FAILOVER_SEPARATOR
    from .nameko_amqp import CONNECTION_ERRORS, Deadline, RpcConnection

    *others, last = broker_url.split(FAILOVER_SEPARATOR)
    for position, url in enumerate(others):
        if deadline.expired():
            break
        # A node that accepts and then hangs must not take the whole deadline: each URL gets
        # an equal share of what is left, the last one all that remains.
        share = Deadline(deadline.remaining() / (len(others) + 1 - position))
        try:
            connection = RpcConnection(url, share)
        except CONNECTION_ERRORS as error:
            _logger.info("broker %s refused a connection (%s); trying the next one",
                         broker_label(url), type(error).__name__)
            continue
        connection.deadline = deadline
        return connection
    return RpcConnection(last, deadline)


def _after_fork_in_child():
    _POOL.after_fork_in_child()


_POOL = ConnectionPool(_new_connection)
os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_pool)

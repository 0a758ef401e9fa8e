"""Calling a Nameko service: one call, or many at once, all within one deadline.

A call follows :func:`call_many` → :func:`_on_connection` (pool checkout; after a lost connection,
the calls without a reply again on a fresh one) → :func:`_send_and_collect` (publish a chunk, then
read its replies). The deadline is
``config.timeout`` from the moment :func:`call_many` starts, for the whole batch and whatever the
broker does: connecting, handshake, declares, publishes and replies each get only what is left
of it (:mod:`.nameko_amqp`, imported on the first call, never at import time).
"""

import atexit
import collections
import logging
import os
import time

from .config import FAILOVER_SEPARATOR
from .errors import (
    BrokerUnreachable,
    RequestsNotAccepted,
    ServiceTimeout,
    ServiceUnavailable,
    broker_label,
    remote_error,
)
from .pool import ConnectionPool
from .telemetry import observer as current_observer

_logger = logging.getLogger(__name__)

BATCH_CHUNK_SIZE = 200  # requests in flight before their replies are read (what a timeout strands)
# Fresh connections one call_many may move to after losing one: enough to walk past the dead
# nodes of a three-node cluster's failover list, few enough that a broker which accepts and
# then drops every connection cannot keep a batch busy until its deadline.
MAX_RECONNECTS = 3
# Pause before sending again requests the broker refused (nacked): a quorum queue refuses while
# its cluster elects a new leader, which takes a few seconds after the loss of a node. Doubled
# after each refusal, up to the maximum, always within the call's deadline.
REFUSED_RETRY_PAUSE = 0.2  # seconds
REFUSED_RETRY_MAX_PAUSE = 2.0  # seconds

CallOutcome = collections.namedtuple("CallOutcome", ["value", "error", "duration_ms"])
CallOutcome.__doc__ = """One request's reply: ``value`` on success, else ``error`` (a
:class:`.errors.BridgeError`); ``duration_ms`` from sending its chunk to reading its reply (the
whole timeout for a request sent and not answered; 0 for one never sent, or whose broker was
lost before it answered)."""


def call(config, service, method, *args, resend=True, **kwargs):
    """Call ``service.method(*args, **kwargs)`` and return its result, or raise a
    ``BridgeError``. ``resend`` (so no remote keyword argument has that name): as for
    :func:`call_many`."""
    outcome = call_many(config, service, method, [args], [kwargs], resend=resend)[0]
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def call_many(config, service, method, args_list, kwargs_list=None, resend=True,
              require_consumer=False, headers_list=None):
    """Call ``service.method(*args, **kwargs)`` for each ``args`` in ``args_list`` (and the
    ``kwargs`` at the same place in ``kwargs_list``, default none); one outcome each.

    Ends within ``config.timeout`` seconds. A failure of the whole batch (broker unreachable or
    URL invalid, service not running) raises a ``BridgeError``; a failure of one request
    (remote error, no reply before the deadline) is in its outcome.

    When the connection is lost mid-way (its broker node died), the requests without a reply
    are sent again on a fresh connection (to the next live node of a failover URL), within
    the same deadline. The service may then run one of them twice: right for a pure method.
    ``resend=False`` is for a method that must not run twice: a request sent on the lost
    connection is not sent again but ends with ``BrokerUnreachable`` (it may or may not have
    run); only requests never sent go out on the fresh connection.

    ``require_consumer``: first ask the broker whether the service's queue has a consumer,
    and raise ``ServiceUnavailable`` without sending anything when it has none (a stopped
    service's queue outlives it and would keep the requests unanswered until the deadline).
    Costs one round trip; background calls use it, so that a stopped service is "not
    delivered" (tried again, not counted) rather than a timeout. The observer is then told
    "not sent" (:meth:`.telemetry.CallObserver.call_not_sent`), not "failed", for such a call,
    and for one whose broker could not be reached before any request was published.

    ``headers_list``: AMQP headers of each request (a dict, or None), over those of the call's
    observer: how a background call carries the trace of the click that queued it.
    """
    if not args_list:
        return []
    started = time.monotonic()  # before the first call's import of the AMQP libraries
    from .nameko_amqp import Deadline

    deadline = Deadline(config.timeout, started)
    requests = list(zip(args_list, kwargs_list or [{}] * len(args_list),
                        headers_list or [None] * len(args_list), strict=True))
    outcomes = [None] * len(requests)
    observer = current_observer()
    if observer is None:
        try:
            return _on_connection(config, deadline, service, method, requests, outcomes,
                                  resend, require_consumer=require_consumer)
        except _NotSent as error:
            raise error.error from None
    observed = observer.call_started(service, method, len(requests))
    try:
        _on_connection(config, deadline, service, method, requests, outcomes, resend,
                       observer.message_headers(observed), require_consumer)
    except _NotSent as error:
        observer.call_not_sent(observed, error.error)
        raise error.error from None
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
def _on_connection(config, deadline, service, method, requests, outcomes, resend,
                   headers=None, require_consumer=False):
    """Fill ``outcomes`` (``None``: no reply yet) by :func:`_send_and_collect` on a pooled
    connection.

    A connection lost while in use (broker restart, a cluster node killed, a firewall) is
    replaced by a fresh one, at most :data:`MAX_RECONNECTS` times, within the same deadline,
    for the requests without a reply (see :func:`call_many` for ``resend``), when the lost
    connection had worked: it was reused, it had brought replies, or the URL names other
    nodes. Otherwise the broker is unreachable: raised when no request has an outcome yet,
    else the outcome of the rest. A connection that met the deadline is dropped, never pooled.
    """
    from .nameko_amqp import CONNECTION_ERRORS

    broker = broker_label(config.broker_url)
    failover = FAILOVER_SEPARATOR in config.broker_url
    ever_sent = False
    for reconnects in range(MAX_RECONNECTS + 1):
        try:
            item = _POOL.acquire(config.broker_url, deadline)
        except CONNECTION_ERRORS as error:
            return _unreachable_rest(config, deadline, error, outcomes,
                                     not_sent=require_consumer and not ever_sent)
        item.resource.deadline = deadline
        item.resource.headers = headers
        pending = [index for index, outcome in enumerate(outcomes) if outcome is None]
        sent = set()
        try:
            if require_consumer and not item.resource.consumers(service):
                complete = None  # nothing sent, on a sound connection
            else:
                complete = _send_and_collect(item.resource, config, service, method,
                                             requests, pending, outcomes, sent)
        except CONNECTION_ERRORS as error:
            _POOL.discard(item)
            ever_sent = ever_sent or bool(sent)
            lost = [index for index in pending if outcomes[index] is None and index in sent]
            answered = len(lost) < len(sent)
            if not resend and lost:
                not_resent = BrokerUnreachable.from_exception(config.broker_url, error)
                for index in lost:
                    outcomes[index] = CallOutcome(None, not_resent, 0.0)
                if None not in outcomes:  # nothing left to send
                    return outcomes
            retry = item.reused or answered or failover
            if not retry or reconnects == MAX_RECONNECTS or deadline.expired():
                return _unreachable_rest(config, deadline, error, outcomes,
                                         not_sent=require_consumer and not ever_sent)
            _logger.info("connection to %s lost (%s) with %d of %d requests unanswered; "
                         "%s on a new connection", broker, type(error).__name__,
                         len(lost), len(requests),
                         "sending them again" if resend else "sending the unsent ones")
            continue
        except BaseException:
            _POOL.discard(item)
            raise
        if complete is None:
            _POOL.release(item)
            raise _NotSent(ServiceUnavailable(service=service, broker=broker))
        if complete:
            _POOL.release(item)
        else:  # stopped by the deadline, maybe mid-frame; late replies would come next
            _POOL.discard(item)
        return outcomes
    raise AssertionError("unreachable: the loop returns")  # pragma: no cover


class _NotSent(Exception):  # noqa: N818 - not an error of the call: nothing was sent
    """Raised inside this module for ``require_consumer`` when no request was sent: the service
    has no consumer, or the broker could not be reached; ``error`` is what the caller gets."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


def _send_and_collect(connection, config, service, method, requests, pending, outcomes, sent):
    """Publish the requests of ``pending`` (indexes into ``requests``) ``BATCH_CHUNK_SIZE``
    at a time, recording each index in ``sent`` before its publish, and write each reply
    into ``outcomes`` until the deadline; the requests the broker refused go again after a
    pause (:data:`REFUSED_RETRY_PAUSE`); requests without a reply by then (sent or not) get
    a ``ServiceTimeout``. Return whether every request had its reply."""
    from .nameko_amqp import CONNECTION_ERRORS, DeadlineExceeded, UnroutableRequest

    correlation_ids = {}
    sent_at = time.monotonic()
    try:
        for start in range(0, len(pending), BATCH_CHUNK_SIZE):
            chunk = pending[start:start + BATCH_CHUNK_SIZE]
            pause = REFUSED_RETRY_PAUSE
            while chunk:
                connection.refused.difference_update(correlation_ids)  # sent again below
                sent_at = time.monotonic()
                correlation_ids = {}
                for index in chunk:
                    sent.add(index)
                    args, kwargs, headers = requests[index]
                    correlation_ids[connection.send(service, method, args, kwargs,
                                                    headers)] = index
                connection.collect(list(correlation_ids))
                chunk = []
                for correlation_id, index in correlation_ids.items():
                    if correlation_id in connection.refused:
                        chunk.append(index)
                    else:
                        outcomes[index] = _outcome(connection, correlation_id, sent_at,
                                                   service, method)
                if chunk:
                    _logger.info("the broker refused %d request(s) for %s.%s (a queue without "
                                 "a leader?); sending them again in %g s", len(chunk), service,
                                 method, pause)
                    connection.pause_after_refusal(pause)
                    pause = min(pause * 2, REFUSED_RETRY_MAX_PAUSE)
    except UnroutableRequest as error:
        raise ServiceUnavailable(service=service, broker=broker_label(config.broker_url)) from error
    except DeadlineExceeded:
        _time_out_the_rest(connection, config, service, method, requests, pending, outcomes,
                           correlation_ids, sent_at, sent)
        return False
    except CONNECTION_ERRORS:  # after DeadlineExceeded, itself an OSError
        # The replies read before the connection died are good: keep them, resend the rest.
        for correlation_id, index in correlation_ids.items():
            if outcomes[index] is None and correlation_id in connection.replies:
                outcomes[index] = _outcome(connection, correlation_id, sent_at, service, method)
        raise
    return True


def _time_out_the_rest(connection, config, service, method, requests, pending, outcomes,
                       correlation_ids, sent_at, sent):
    """At the deadline: keep the replies read, and give the requests of ``pending`` without
    one a ``RequestsNotAccepted`` (the broker refused them or never confirmed them) or a
    ``ServiceTimeout``: after the whole timeout for those sent (in ``sent``), after none
    (``duration_ms`` 0) for those the deadline kept from being sent."""
    params = dict(service=service, method=method, timeout=config.timeout,
                  broker=broker_label(config.broker_url))
    late = CallOutcome(None, ServiceTimeout(**params), config.timeout * 1000.0)
    unsent = late._replace(duration_ms=0.0)
    not_accepted = CallOutcome(None, RequestsNotAccepted(**params), late.duration_ms)
    not_taken = connection.unconfirmed() | connection.refused
    for correlation_id, index in correlation_ids.items():
        if correlation_id in connection.replies:
            outcomes[index] = _outcome(connection, correlation_id, sent_at, service, method)
        elif correlation_id in not_taken:
            outcomes[index] = not_accepted
    for index in pending:
        if outcomes[index] is None:
            outcomes[index] = late if index in sent else unsent
    for kinds in ((late, unsent), (not_accepted,)):
        count = sum(outcome is kind for outcome in outcomes for kind in kinds)
        if count:
            _logger.warning("%s (%d of %d requests)", kinds[0].error, count, len(requests))


def _outcome(connection, correlation_id, sent_at, service, method):
    value, error, arrived = connection.pop_reply(correlation_id)
    duration_ms = (arrived - sent_at) * 1000.0
    if error is not None:
        _logger.debug("%s.%s raised %s", service, method, error[0])
        return CallOutcome(None, remote_error(service, method, *error), duration_ms)
    _logger.debug("%s.%s answered in %.1f ms", service, method, duration_ms)
    return CallOutcome(value, None, duration_ms)


def _unreachable_rest(config, deadline, error, outcomes, not_sent=False):
    """Raise the broker unreachable when no request has an outcome yet (as :class:`_NotSent`
    when ``not_sent``: no request of the call was published); else make it the outcome of
    those without one, and return ``outcomes``."""
    unreachable = _unreachable(config, deadline, error)
    if all(outcome is None for outcome in outcomes):
        if not_sent:
            raise _NotSent(unreachable) from error
        raise unreachable from error
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            outcomes[index] = CallOutcome(None, unreachable, 0.0)
    return outcomes


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

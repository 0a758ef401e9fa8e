"""Nameko's RPC protocol over one AMQP connection whose every socket operation ends by a deadline.

The only module that knows how nameko speaks over AMQP and how py-amqp reads its socket: revisit
it when nameko, kombu or amqp is upgraded. What it relies on:

- nameko's RPC wire protocol (``nameko.rpc``): requests are published to the durable topic
  exchange ``nameko-rpc`` with routing key ``<service>.<method>``, a body ``{"args", "kwargs"}``
  serialised by kombu, ``reply_to`` and ``correlation_id``; the service publishes its reply
  ``{"result", "error"}`` (``error``: ``exc_type``, ``value``) to the same exchange with routing
  key ``reply_to``. nameko itself is not imported: it would import eventlet, which Odoo must
  never load.
- kombu's reading of a broker URL (:func:`kombu.utils.url.url_to_parts`), so that a URL means the
  same broker here and to ``nameko run --broker``, and kombu's serialisers.
- RabbitMQ's publisher confirms: a request the broker could not enqueue (a quorum queue without
  a leader while its cluster elects one after the loss of a node) is nacked, where without
  confirms it would be dropped in silence and its caller would wait for the deadline.
- py-amqp's transport: :class:`_DeadlineMixin` replaces the socket ``recv``/``send`` that
  ``_setup_transport`` installs, because a peer that drips one byte at a time defeats any
  per-read timeout; only a deadline checked before each socket operation bounds it.
"""

import logging
import time
import uuid

import amqp
import amqp.transport
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import dumps, loads
from kombu.utils.url import url_to_parts

from .config import BROKER_URL_SCHEMES, InvalidSetting, check_broker_url
from .errors import InvalidBrokerUrl, broker_label

_logger = logging.getLogger(__name__)

RPC_EXCHANGE = "nameko-rpc"  # nameko's default RPC_EXCHANGE
REPLY_QUEUE_TEMPLATE = "rpc.reply-compute_bridge-%s"  # nameko's rpc.reply-<caller>-<uuid>
SERVICE_QUEUE_TEMPLATE = "rpc-%s"  # nameko's queue of a service's RPC entrypoints
SERIALIZER = "json"  # nameko's default SERIALIZER
ACCEPTED_CONTENT_TYPES = ("application/json",)  # never pickle from the network
UNDECODABLE_REPLY = "UndecodableReply"  # exc_type of a reply in another format
# Requests are sent transient: one outliving a broker restart would answer a reply queue that
# died with it. Unacknowledged requests are still redelivered to another instance.
REQUEST_DELIVERY_MODE = 1  # AMQP non-persistent
# Reply queues live and die with one connection: never replicated, whatever queue type the
# virtual host defaults to (a quorum default would make each one a durable Raft group).
REPLY_QUEUE_ARGUMENTS = {"x-queue-type": "classic"}
DEFAULT_PORTS = {False: 5672, True: 5671}
DEFAULT_CREDENTIALS = "guest"  # kombu's default user and password
LIVENESS_PROBE_SECONDS = 0.05  # how long an idle connection may take to show it is alive
CLOSE_TIMEOUT = 1.0  # seconds to close an idle connection politely before dropping its socket

# What "the broker cannot be used" looks like: socket errors (refused, reset, timed out) and
# AMQP errors (refused login, connection closed by the broker, a declare refused).
CONNECTION_ERRORS = (OSError, amqp.exceptions.AMQPError)


class Deadline:
    """The moment a call must be over, and what is left of it.

    >>> Deadline(5).remaining() > 4.9
    True
    >>> Deadline(-1).expired()
    True
    """

    def __init__(self, seconds, start=None):
        self.at = (time.monotonic() if start is None else start) + seconds

    def remaining(self):
        return self.at - time.monotonic()

    def expired(self):
        return self.remaining() <= 0


class DeadlineExceeded(TimeoutError):
    """The deadline passed during a socket operation: the connection's state is unknown."""


class UnroutableRequest(Exception):
    """The broker returned a request: no queue is bound for its routing key (service)."""


def parse_broker_url(url):
    """One broker URL as keyword arguments of :class:`amqp.Connection`, or raise InvalidBrokerUrl
    for what :func:`.config.check_broker_url` refuses (the rule Settings applies on save).

    >>> address = parse_broker_url("pyamqp://u:p%40ss@rabbit/")
    >>> address["host"], address["userid"], address["password"], address["virtual_host"]
    ('rabbit:5672', 'u', 'p@ss', '/')
    >>> try:
    ...     parse_broker_url("http://u:secret@localhost:5672")
    ... except InvalidBrokerUrl as error:
    ...     print(error.params["detail"])
    the scheme "http" is not an AMQP one: use one of pyamqp, amqp, pyamqps, amqps
    """
    try:
        check_broker_url(url)
    except InvalidSetting as error:
        raise InvalidBrokerUrl(broker=broker_label(url), detail=str(error)) from None
    parts = url_to_parts(url.strip())
    tls = BROKER_URL_SCHEMES[parts.scheme]
    host, port = parts.hostname, parts.port
    virtual_host = parts.path or "/"
    return {
        "host": "[%s]:%d" % (host, port or DEFAULT_PORTS[tls]) if ":" in host
        else "%s:%d" % (host, port or DEFAULT_PORTS[tls]),
        "userid": parts.username or DEFAULT_CREDENTIALS,
        "password": parts.password or DEFAULT_CREDENTIALS,
        "virtual_host": virtual_host,
        "ssl": tls,
    }


class RpcConnection:
    """One AMQP connection with an exclusive reply queue, used by one thread at a time.

    Every blocking step (TCP connect, handshake, declares, publishes, reading replies) ends by
    the deadline of the call in progress (:attr:`deadline`): past it, a socket operation raises
    :class:`DeadlineExceeded` and the connection must be :meth:`abort`-ed, not reused.
    """

    headers = None  # AMQP headers for the requests of the call in progress (rpc/telemetry.py)

    def __init__(self, broker_url, deadline):
        self.deadline = deadline
        # correlation id -> ((content type, encoding, body), time.monotonic() of arrival)
        self.replies = {}
        self.returned = False
        self.refused = set()  # correlation ids of requests the broker nacked
        self._unconfirmed = {}  # delivery tag -> correlation id, in publishing order
        self._published = 0  # delivery tags count the channel's publishes from 1
        self._publisher = None
        self.reply_to = str(uuid.uuid4())
        self._connection = _DeadlineConnection(
            lambda: self.deadline, connect_timeout=max(deadline.remaining(), 0.001),
            heartbeat=0, **parse_broker_url(broker_url),
        )
        try:
            self._connection.connect()
            self._channel = channel = self._connection.channel()
            channel.exchange_declare(RPC_EXCHANGE, "topic", durable=True, auto_delete=False)
            queue = REPLY_QUEUE_TEMPLATE % self.reply_to
            # Exclusive: the broker deletes the queue with the connection, however it ends.
            channel.queue_declare(queue, exclusive=True, auto_delete=True,
                                  arguments=REPLY_QUEUE_ARGUMENTS)
            channel.queue_bind(queue, RPC_EXCHANGE, routing_key=self.reply_to)
            channel.basic_consume(queue, no_ack=True, callback=self._on_reply)
            self._open_publisher()
        except BaseException:
            self.abort()
            raise

    def send(self, service, method, args, kwargs=None, headers=None):
        """Publish one request without waiting for its confirm; return its correlation id.
        ``headers``: AMQP headers of this request, over those of the call (:attr:`headers`).

        ``mandatory``: a request no queue is bound for comes back (see :meth:`collect`)
        instead of waiting for a reply that cannot come. A request the broker nacks ends up
        in :attr:`refused` (see :meth:`collect`).
        """
        correlation_id = str(uuid.uuid4())
        content_type, encoding, body = dumps({"args": args, "kwargs": kwargs or {}},
                                              serializer=SERIALIZER)
        message = amqp.Message(
            body, content_type=content_type, content_encoding=encoding,
            correlation_id=correlation_id, reply_to=self.reply_to,
            delivery_mode=REQUEST_DELIVERY_MODE,
            application_headers={**self.headers, **headers} if headers and self.headers
            else headers or self.headers,
            # A request still waiting in the service's queue when its caller has given up is
            # dropped by the broker: a slow or stopped service then finds no pile of requests
            # nobody waits for, ahead of the ones somebody does.
            expiration=str(max(int(self.deadline.remaining() * 1000), 1)),
        )
        try:
            self._publisher.basic_publish(
                message, exchange=RPC_EXCHANGE, routing_key="%s.%s" % (service, method),
                mandatory=True,
            )
            self._published += 1
            self._unconfirmed[self._published] = correlation_id
        except amqp.exceptions.RecoverableConnectionError as error:
            # py-amqp turns a socket timeout during a publish into "basic_publish: timed
            # out": past the deadline that is the deadline, not a broker gone away.
            if self.deadline.expired():
                raise DeadlineExceeded("the deadline passed while publishing") from error
            raise
        return correlation_id

    def collect(self, correlation_ids):
        """Read replies until every one of ``correlation_ids`` has one or was refused (nacked:
        in :attr:`refused`, to be sent again), a request comes back (:class:`UnroutableRequest`)
        or the deadline passes (:class:`DeadlineExceeded`)."""
        pending = set(correlation_ids)
        while True:
            if self.returned:
                raise UnroutableRequest()
            pending.difference_update(self.replies)
            pending.difference_update(self.refused)
            if not pending:
                return
            remaining = self.deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded("no reply before the deadline")
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError as error:
                raise DeadlineExceeded("no reply before the deadline") from error

    def unconfirmed(self):
        """The correlation ids of the requests the broker has neither confirmed nor refused."""
        return set(self._unconfirmed.values())

    def pause_after_refusal(self, seconds):
        """Wait ``seconds`` (or raise :class:`DeadlineExceeded` when the deadline comes first),
        then publish on a new channel: a channel keeps sending to the queue leader it knew,
        which keeps refusing after the cluster has elected another one."""
        if self.deadline.remaining() <= seconds:
            time.sleep(max(self.deadline.remaining(), 0))
            raise DeadlineExceeded("the deadline passed while waiting to send again")
        time.sleep(seconds)
        self._publisher.close()
        self._open_publisher()

    def pop_reply(self, correlation_id):
        """``(result, error, arrived)`` of a collected reply; ``error`` is ``(exc_type, value)``."""
        (content_type, encoding, body), arrived = self.replies.pop(correlation_id)
        try:
            reply = loads(body, content_type, encoding, accept=ACCEPTED_CONTENT_TYPES)
        except (ContentDisallowed, DecodeError) as error:
            return None, (UNDECODABLE_REPLY, str(error)), arrived
        error = reply.get("error")
        if error:
            return None, (error.get("exc_type"), error.get("value")), arrived
        return reply.get("result"), None, arrived

    def consumers(self, service):
        """How many consumers ``service``'s RPC queue has (0 when it does not exist).

        A stopped service leaves its durable queue behind: requests published to it are
        accepted and wait there unanswered. Asked on a channel of its own, because a missing
        queue makes the broker close the channel that asked.
        """
        channel = self._connection.channel()
        try:
            _, _, consumers = channel.queue_declare(SERVICE_QUEUE_TEMPLATE % service,
                                                    passive=True)
        except amqp.exceptions.NotFound:
            return 0
        channel.close()
        return consumers

    def is_alive(self):
        """An idle connection has nothing to say: read only if its socket is readable. A
        connection the broker closed is readable (end of file) and reading it raises."""
        if not self._connection.connected:
            return False
        self.deadline = Deadline(LIVENESS_PROBE_SECONDS)
        try:
            self._connection.drain_events(timeout=0)
        except DeadlineExceeded:  # stuck in the middle of a frame
            return False
        except TimeoutError:  # nothing to read: alive
            return True
        except CONNECTION_ERRORS:
            return False
        return True  # a stray frame was read: the connection works

    def close(self):
        """Close politely (the broker logs no error) within :data:`CLOSE_TIMEOUT`, else drop."""
        self.deadline = Deadline(CLOSE_TIMEOUT)
        try:
            self._connection.close()
        except CONNECTION_ERRORS as error:
            _logger.debug("closing an AMQP connection: %s", type(error).__name__)
            self.abort()

    def abort(self):
        """Drop the socket without a word: its AMQP state is unknown (mid-frame, say)."""
        self._connection.collect()

    def _on_reply(self, message):
        properties = message.properties
        content = (properties.get("content_type"), properties.get("content_encoding"),
                   message.body)
        self.replies[properties.get("correlation_id")] = (content, time.monotonic())

    def _open_publisher(self):
        """The channel requests are published on, in confirm mode: apart from the reply
        consumer's so that it can be replaced (:meth:`pause_after_refusal`)."""
        self._publisher = channel = self._connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._unconfirmed.clear()
        self._published = 0

    def _on_ack(self, delivery_tag, multiple):
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag, multiple):
        refused = self._settle(delivery_tag, multiple)
        _logger.debug("the broker refused %d request(s)", len(refused))
        self.refused.update(refused)

    def _settle(self, delivery_tag, multiple):
        """Forget the confirmed publishes (``delivery_tag``, and all before it when
        ``multiple``); return their correlation ids."""
        if not multiple:
            settled = self._unconfirmed.pop(delivery_tag, None)
            return [] if settled is None else [settled]
        settled = []
        # publishing order: the oldest first, so only the settled tags are looked at
        while self._unconfirmed and next(iter(self._unconfirmed)) <= delivery_tag:
            settled.append(self._unconfirmed.pop(next(iter(self._unconfirmed))))
        return settled

    def _on_return(self, exc, exchange, routing_key, message):
        _logger.debug("the broker returned a request for %s: %s", routing_key, exc)
        self.returned = True


class _DeadlineMixin:
    """Socket reads and writes that each get only what is left of the deadline."""

    def __init__(self, *args, deadline_of, **kwargs):
        self._deadline_of = deadline_of
        super().__init__(*args, **kwargs)

    def _setup_transport(self):
        result = super()._setup_transport()
        self._quick_recv = self._bounded(self._quick_recv)
        self._write = self._bounded(self._write)
        return result

    def _bounded(self, operation):
        def bounded(data):
            remaining = self._deadline_of().remaining()
            if remaining <= 0:
                raise DeadlineExceeded("deadline passed")
            sock = self.sock
            previous = sock.gettimeout()  # as set by the caller (having_timeout), restored
            sock.settimeout(remaining if previous is None else min(previous, remaining))
            try:
                return operation(data)
            except TimeoutError:
                if self._deadline_of().expired():  # the deadline, not the caller's timeout
                    raise DeadlineExceeded("deadline passed") from None
                raise
            finally:
                sock.settimeout(previous)

        return bounded


class _DeadlineTCPTransport(_DeadlineMixin, amqp.transport.TCPTransport):
    pass


class _DeadlineSSLTransport(_DeadlineMixin, amqp.transport.SSLTransport):
    pass


class _DeadlineConnection(amqp.Connection):
    def __init__(self, deadline_of, **kwargs):
        self._deadline_of = deadline_of
        super().__init__(**kwargs)

    def Transport(self, host, connect_timeout, ssl=False, read_timeout=None,  # noqa: N802
                  write_timeout=None, socket_settings=None, **kwargs):
        """py-amqp's transport factory (its name and signature), with deadline-bound sockets."""
        transport_cls = _DeadlineSSLTransport if ssl else _DeadlineTCPTransport
        return transport_cls(
            host, connect_timeout=connect_timeout, ssl=ssl, read_timeout=read_timeout,
            write_timeout=write_timeout, socket_settings=socket_settings,
            deadline_of=self._deadline_of, **kwargs,
        )

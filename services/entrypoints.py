"""The services' entrypoints: nameko's own, configured the way these services need them.

- `rpc`: nameko's `@rpc`, replying without publish confirms. nameko 2.14.1 publishes every RPC
  reply with a confirm, so the worker waits one broker round trip per reply. Here replies are
  published without a confirm and non-persistent (reply queues are not durable: nothing is
  written to disk either way). What is given up: a reply the broker drops (its connection lost
  between publish and delivery, the caller's reply queue gone) is no longer an error in the
  service's log; the caller sees it as an RPC timeout, which it already has to handle, since a
  confirmed reply can be lost on the caller's side just the same. The request is still acked
  after the reply is handed to the socket. Requests and replies on the wire are unchanged:
  `nameko shell`, the blog post's ClusterRpcProxy and compute_bridge call these services
  exactly as nameko's own `@rpc`.
- `event_handler`: nameko's `@event_handler`.
- `configured_timer`: nameko's `@timer`, its interval read from the config at setup.
- `health_http`: nameko's `@http` on a web server that binds as HealthWebServer says.

`rpc`, `event_handler` and compute's reply listener (services/dependencies.py) consume through
WatchedQueueConsumer, which tells /health whether they are connected to the broker. The queues
that outlive a service instance (its RPC queue, its event queues) are declared with the type
QUEUE_TYPE says (quorum on a RabbitMQ cluster: replicated, so they survive the loss of a node);
the queues that die with their consumer are always classic, whatever the virtual host's default
queue type: a quorum queue can be neither exclusive nor auto-delete, and a reply queue gains
nothing from being replicated.
"""

import errno
import logging

import amqp.exceptions
import eventlet
import kombu.serialization
from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    CALL_ID_STACK_CONTEXT_KEY,
    DEFAULT_SERIALIZER,
    DEFAULT_TRANSPORT_OPTIONS,
    HEADER_PREFIX,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.events import EventHandler
from nameko.exceptions import MethodNotFound
from nameko.messaging import QueueConsumer
from nameko.rpc import ReplyListener, Responder, Rpc, RpcConsumer, get_rpc_exchange
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, parse_address

from services import amqp_decoding, instance, telemetry
from services.settings import (
    DEFAULT_WEB_SERVER_ADDRESS,
    QUEUE_TYPE_CLASSIC,
    WEB_SERVER_ADDRESS_KEY,
    queue_type,
    setting,
)

_logger = logging.getLogger(__name__)
amqp_decoding.install()

FALLBACK_PORT = 0  # the kernel picks a free port
QUEUE_TYPE_ARGUMENT = "x-queue-type"
# What a reply or an ack meets when the broker is gone: socket errors, py-amqp's connection
# errors, kombu's OperationalError once its publish retries are spent.
BROKER_CONNECTION_ERRORS = (OSError, amqp.exceptions.ConnectionError, OperationalError)
MAX_HEADER_NAME_BYTES = 255  # an AMQP field table's names are short strings
# The exc_type label of nameko_entrypoint_errors for a request dropped before a worker ran: no
# reply_to, or a content type nameko cannot reply in
UNANSWERABLE_REQUEST = "UnanswerableRequest"


def _is_text(value):
    """Whether ``value`` can be sent back: services/amqp_decoding.py turns invalid UTF-8 into
    lone surrogates, which cannot be encoded again."""
    try:
        value.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        return False
    return True


def set_queue_type(queue, config):
    """Give kombu ``queue`` (not yet declared) the type it must have: QUEUE_TYPE's for a queue
    that outlives its consumer, classic for one that dies with it."""
    if queue.exclusive or queue.auto_delete:
        wanted = QUEUE_TYPE_CLASSIC
    else:
        wanted = queue_type(config)
    if wanted:
        queue.queue_arguments = dict(queue.queue_arguments or {}, **{QUEUE_TYPE_ARGUMENT: wanted})


class WatchedQueueConsumer(QueueConsumer):
    """nameko's QueueConsumer (one per service container, one broker connection for all its
    consumers), recording in services/instance.py whether it is connected: kombu calls
    on_consume_ready after every (re)connection and on_connection_error for every failed attempt,
    and retries with a growing pause, so the broker can be back while this one still waits."""

    def start(self):
        if not self._starting:
            instance.record_consumer(self, connected=False)
        super().start()

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        instance.record_consumer(self, connected=True)
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def on_connection_error(self, exc, interval):
        instance.record_consumer(self, connected=False)
        super().on_connection_error(exc, interval)

    def stop(self):
        super().stop()
        instance.forget_consumer(self)

    def kill(self):
        super().kill()
        instance.forget_consumer(self)


class WatchedReplyListener(ReplyListener):
    queue_consumer = WatchedQueueConsumer()

    def setup(self):
        super().setup()
        # nameko's reply queue expires rather than auto-deletes: classic all the same. Not
        # durable: a durable queue whose node died stays in the cluster's metadata, and
        # declaring it again on another node is refused until that node is back, which keeps
        # the whole consumer connection (the service's RPC queue too) from reconnecting; the
        # cluster forgets a transient queue with its node.
        self.queue.queue_arguments[QUEUE_TYPE_ARGUMENT] = QUEUE_TYPE_CLASSIC
        self.queue.durable = False


class ContextDataChecked:
    """Mixed into the entrypoints that read AMQP headers: a ``nameko.call_id_stack`` header
    that is not a list of strings is dropped. nameko joins that stack for its log lines before
    the worker runs, and anything else in it (from anyone who may publish) kills the container;
    the message, back in its queue, then kills every instance that takes it.

    Also dropped: a header whose name, once nameko prefixes it with ``nameko.`` to pass it on
    to the calls and events the worker makes, is too long for AMQP; each such call would fail
    (a notification lost) and leave an entry behind in nameko's reply listener."""

    def unpack_message_headers(self, message):
        context_data = super().unpack_message_headers(message)
        for key in list(context_data):
            name = "%s.%s" % (HEADER_PREFIX, key)  # as nameko's HeaderEncoder names it
            if len(name.encode("utf-8", "surrogateescape")) > MAX_HEADER_NAME_BYTES:
                del context_data[key]
        stack = context_data.get(CALL_ID_STACK_CONTEXT_KEY)
        if stack is not None and not (isinstance(stack, (list, tuple))
                                      and all(isinstance(item, str) for item in stack)):
            _logger.debug("%s: ignoring a call_id_stack header that is not a list of strings",
                          self.container.service_name)
            del context_data[CALL_ID_STACK_CONTEXT_KEY]
        return context_data


class WatchedEventHandler(ContextDataChecked, EventHandler):
    queue_consumer = WatchedQueueConsumer()

    def setup(self):
        super().setup()
        set_queue_type(self.queue, self.container.config)


event_handler = WatchedEventHandler.decorator


class ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = NON_PERSISTENT

    def publish(self, payload, **kwargs):
        # nameko writes confirm_publish into the transport_options dict it is given, by default
        # a class attribute shared by every Publisher of the process: give it one of our own.
        kwargs.setdefault("transport_options", dict(DEFAULT_TRANSPORT_OPTIONS))
        return super().publish(payload, **kwargs)


class UnconfirmedResponder(Responder):
    publisher_cls = ReplyPublisher


class UnconfirmedRpcConsumer(telemetry.RejectedRequestMetrics, RpcConsumer):
    queue_consumer = WatchedQueueConsumer()

    def setup(self):
        super().setup()
        set_queue_type(self.queue, self.container.config)

    def handle_result(self, message, result, exc_info):
        # nameko's RpcConsumer.handle_result, with UnconfirmedResponder for nameko's Responder
        config = self.container.config
        responder = UnconfirmedResponder(
            config[AMQP_URI_CONFIG_KEY],
            get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        try:
            result, exc_info = responder.send_response(result, exc_info)
            self.queue_consumer.ack_message(message)
        except BROKER_CONNECTION_ERRORS as error:
            # nameko kills the whole container when a worker's reply cannot be sent. The
            # request, unacknowledged, goes back to its queue with the lost connection and is
            # delivered again once the broker is back; its caller retries or has timed out.
            _logger.warning("%s: the reply could not be sent, the broker will deliver the "
                            "request again (%s: %s)", self.container.service_name,
                            type(error).__name__, error)
        return result, exc_info

    def handle_message(self, body, message):
        # Before any worker runs: nameko's Responder fails on a request without a reply_to or
        # in a content type kombu has no serializer for, and nameko then kills the container;
        # the request, back in its queue, would kill every instance that takes it. nameko's
        # own callers never send one: it comes from someone else publishing on the broker.
        properties = message.properties
        if not properties.get("reply_to"):
            self._drop_unanswerable(message, "it has no reply_to")
        elif not all(_is_text(properties.get(name) or "")
                     for name in ("reply_to", "correlation_id")):
            self._drop_unanswerable(message, "its reply_to or correlation_id is not valid text")
        elif properties.get("content_type") not in kombu.serialization.registry.type_to_name:
            self._drop_unanswerable(message, "no serializer for its content type %r"
                                    % properties.get("content_type"))
        else:
            super().handle_message(body, message)

    def _drop_unanswerable(self, message, reason):
        """Ack, log and count (as a call and an error) a request that cannot be answered."""
        routing_key = message.delivery_info.get("routing_key", "")
        _logger.warning("%s: a request to %s cannot be answered (%s): dropped",
                        self.container.service_name, routing_key, reason)
        try:
            provider = self.get_provider_for_method(routing_key)
        except MethodNotFound:
            provider = None
        self.count_refused(provider, UNANSWERABLE_REQUEST)
        try:
            self.queue_consumer.ack_message(message)
        except BROKER_CONNECTION_ERRORS as error:
            _logger.warning("%s: could not ack the dropped request (%s: %s)",
                            self.container.service_name, type(error).__name__, error)


class UnconfirmedRpc(ContextDataChecked, Rpc):
    rpc_consumer = UnconfirmedRpcConsumer()


rpc = UnconfirmedRpc.decorator


class ConfiguredTimer(Timer):
    """A nameko timer whose interval is read from the container's config (or environment).

    `@timer(interval=...)` fixes the interval when the module is imported, before any config
    is known; this one reads it in setup(), once the container (and its config) exists.
    """

    def __init__(self, read_interval=None, eager=False, **kwargs):
        # read_interval(config) -> seconds; keyword-only in use: nameko's decorator takes a
        # lone positional function for the decorated method itself.
        self.read_interval = read_interval
        super().__init__(interval=None, eager=eager, **kwargs)

    def setup(self):
        self.interval = self.read_interval(self.container.config)
        super().setup()


configured_timer = ConfiguredTimer.decorator


class AccessLinesAtDebug(logging.LoggerAdapter):
    """eventlet's WSGI server writes its access line for each request with .info(): one per
    health check is noise at INFO."""

    def info(self, msg, *args, **kwargs):
        self.debug(msg, *args, **kwargs)


class HealthWebServer(WebServer):
    """nameko's WebServer, binding WEB_SERVER_ADDRESS exactly when it is given (a container's
    HEALTHCHECK must find its port where it was told), else the default address or, when that
    is taken (another instance on this host), a free port: logged and reported in /health and
    in the heartbeats."""

    @property
    def configured_address(self):
        return setting(self.container.config, WEB_SERVER_ADDRESS_KEY)

    @property
    def bind_addr(self):
        return parse_address(self.configured_address or DEFAULT_WEB_SERVER_ADDRESS)

    def listen(self):
        # reuse_port=False: eventlet sets SO_REUSEPORT by default, which would let two instances
        # share one port and answer each other's health checks.
        address = tuple(self.bind_addr)
        try:
            return eventlet.listen(address, reuse_port=False)
        except OSError as error:
            if self.configured_address or error.errno != errno.EADDRINUSE:
                raise
        _logger.info(
            "health: %s:%s is taken (another instance on this host?); using a free port",
            *address,
        )
        return eventlet.listen((address[0], FALLBACK_PORT), reuse_port=False)

    def get_wsgi_server(self, *args, **kwargs):
        server = super().get_wsgi_server(*args, **kwargs)
        server.log = AccessLinesAtDebug(server.log)
        return server

    def start(self):
        # WebServer.start, with self.listen() in place of eventlet.listen(self.bind_addr)
        if not self._starting:
            self._starting = True
            self._sock = self.listen()
            self._sock.settimeout(None)  # work around https://github.com/celery/kombu/issues/838
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)
            instance.health_address = self._sock.getsockname()[:2]
            _logger.info("health: listening on http://%s:%s/health", *instance.health_address)


class HealthRequestHandler(HttpRequestHandler):
    server = HealthWebServer()


health_http = HealthRequestHandler.decorator

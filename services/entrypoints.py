"""nameko's `rpc` entrypoint, replying without publish confirms.

nameko 2.14.1 publishes every RPC reply with a publish confirm: the worker waits one broker
round trip per reply (basic_publish_confirm was 18% of the services' CPU, the reply publish
29%). Here replies are published without a confirm and non-persistent (reply queues are not
durable: nothing is written to disk either way).

What is given up: a reply the broker drops (its connection lost between publish and delivery,
the caller's reply queue gone) is no longer an error in the service's log; the caller sees it
as an RPC timeout, which it already has to handle, since a confirmed reply can be lost on the
caller's side just the same. The request itself is acked after the reply is handed to the
socket, as before.

Requests on the wire and the reply format are unchanged: `nameko shell`, the blog post's
ClusterRpcProxy and compute_bridge call these services exactly as nameko's own `@rpc`.
"""

from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    DEFAULT_TRANSPORT_OPTIONS,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.rpc import Responder, Rpc, RpcConsumer, get_rpc_exchange


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


class UnconfirmedRpcConsumer(RpcConsumer):
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
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class UnconfirmedRpc(Rpc):
    rpc_consumer = UnconfirmedRpcConsumer()


rpc = UnconfirmedRpc.decorator

"""Calling the Nameko services from Odoo, without Odoo.

Nothing here imports the ORM. kombu and amqp are imported only when a call is made, and
nameko (with eventlet) never: Odoo's gevent (websocket) process can import the addon and no
process ever loads eventlet.

Reading order: :mod:`.config` (where the broker is) → :mod:`.client` (what a call does) →
:mod:`.errors` (what can go wrong) → :mod:`.pool` (connections kept per worker process) →
:mod:`.nameko_amqp` (nameko's protocol over a deadline-bound AMQP connection: the one module to
revisit when nameko, kombu or amqp is upgraded).
"""

from .client import CallOutcome, call, call_many, close_pool
from .config import (
    BROKER_URL_ENV_VAR,
    BROKER_URL_PARAM,
    DEFAULT_BROKER_URL,
    DEFAULT_RPC_TIMEOUT,
    RPC_TIMEOUT_PARAM,
    BridgeConfig,
    mask_url,
    read_config,
)
from .errors import (
    BridgeError,
    BrokerUnreachable,
    InvalidBrokerUrl,
    InvalidOperands,
    RemoteFailure,
    RequestsNotAccepted,
    ServiceTimeout,
    ServiceUnavailable,
)

__all__ = [
    "BROKER_URL_ENV_VAR",
    "BROKER_URL_PARAM",
    "DEFAULT_BROKER_URL",
    "DEFAULT_RPC_TIMEOUT",
    "RPC_TIMEOUT_PARAM",
    "BridgeConfig",
    "BridgeError",
    "BrokerUnreachable",
    "CallOutcome",
    "InvalidBrokerUrl",
    "InvalidOperands",
    "RemoteFailure",
    "RequestsNotAccepted",
    "ServiceTimeout",
    "ServiceUnavailable",
    "call",
    "call_many",
    "close_pool",
    "mask_url",
    "read_config",
]

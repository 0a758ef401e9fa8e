"""The "Suma" button through Odoo's real HTTP server, with the broker or the service broken."""

import concurrent.futures
import time

import faults_harness as harness
import pytest
from conftest import RPC_TIMEOUT, set_bridge_params
from faults_harness import click, create_operations, notification, read_operations, readable

pytestmark = pytest.mark.odoo
SLACK = 1.0  # "within the timeout + 1 s"


def warm_every_worker(admin, ids, clicks=12):
    """Clicks in parallel so that every prefork worker has a pooled connection."""
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        actions = list(pool.map(lambda _i: click(admin, ids), range(clicks)))
    assert all(notification(a)[0] == "success" for a in actions), actions


def test_broker_down_then_back(odoo, admin, broker, fleet):
    """Broker unreachable at the click: a readable error within timeout + 1 s, the record keeps
    its input with state failed; once the broker is back, pressing again succeeds."""
    [op] = create_operations(admin, [(99999, 99999)])
    warm_every_worker(admin, [op])
    broker.crash()  # connections die without a close frame, as in a power cut
    try:
        started = time.monotonic()
        action = click(admin, [op])
        elapsed = time.monotonic() - started
        kind, message = notification(action)
        assert kind == "danger", action
        readable(message, broker)
        assert elapsed < RPC_TIMEOUT + SLACK, elapsed
        harness.measure("broker down: click answered in", "%.2f s: %s" % (elapsed, message))
        [row] = read_operations(admin, [op])
        assert (row["field_1"], row["field_2"], row["state"]) == (99999, 99999, "failed"), row
        readable(row["error_message"], broker)
        # compute_sum raises instead (nothing to store): a readable UserError, as fast
        started = time.monotonic()
        with pytest.raises(harness.RpcError) as caught:
            admin.call(harness.OPERATION, "compute_sum", 1, 2)
        assert time.monotonic() - started < RPC_TIMEOUT + SLACK
        assert caught.value.kind == 2, caught.value  # UserError: XML-RPC fault code 2
        readable(caught.value.message, broker)
    finally:
        broker.node.start()
    fleet.ensure(1)
    kind, message = notification(click(admin, [op]))
    assert (kind, message) == ("success", "Operation completed 199998"), message
    [row] = read_operations(admin, [op])
    assert (row["state"], row["result"], row["error_message"]) == ("done", 199998, False), row


def test_broker_restart_next_click_succeeds(odoo, admin, broker, fleet):
    """The broker restarts while Odoo keeps running with pooled connections in every worker:
    the very next click succeeds (and every click after it, whichever worker serves it)."""
    bridge = harness.load_bridge_rpc()
    client_config = bridge.BridgeConfig(broker.uri(), RPC_TIMEOUT, False)
    assert bridge.call(client_config, "compute", "method", 1, 1) == 2  # pooled here too
    ops = create_operations(admin, [(i, 1) for i in range(8)])
    warm_every_worker(admin, ops[:1])
    broker.restart_node()
    fleet.ensure(1)  # the services reconnect by themselves: wait for them, not for Odoo
    for op, i in zip(ops, range(8), strict=True):
        started = time.monotonic()
        kind, message = notification(click(admin, [op]))
        if i == 0:
            harness.measure("broker restarted: first click after it", "%.2f s, %s: %s" % (
                time.monotonic() - started, kind, message))
        assert (kind, message) == ("success", "Operation completed %d" % (i + 1)), (i, message)
    assert [r["state"] for r in read_operations(admin, ops)] == ["done"] * 8
    # the addon's client on its own (no Odoo): the pooled connection died too, and recovers
    assert bridge.call(client_config, "compute", "method", 2, 2) == 4


def test_service_not_running_times_out(odoo, admin, broker, fleet):
    """The rpc-compute queue exists but nothing consumes it: the click ends after
    compute_bridge.rpc_timeout with a timeout error, and the worker is free again."""
    [op] = create_operations(admin, [(1, 2)])
    fleet.stop_all()
    harness.wait_until(lambda: broker.consumers() == 0, 20, what="no consumer")
    assert broker.queue() is not None
    try:
        started = time.monotonic()
        kind, message = notification(click(admin, [op]))
        elapsed = time.monotonic() - started
        assert kind == "danger"
        readable(message, broker)
        assert "within %g s" % RPC_TIMEOUT in message, message  # says it timed out, and when
        assert RPC_TIMEOUT - 0.1 <= elapsed < RPC_TIMEOUT + SLACK, elapsed
        harness.measure("no consumer: click answered in", "%.2f s (rpc_timeout %g s): %s"
                        % (elapsed, RPC_TIMEOUT, message))
        [row] = read_operations(admin, [op])
        assert (row["state"], row["field_1"], row["field_2"]) == ("failed", 1, 2)
        # no hung worker: every worker still answers at once
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            rows = list(pool.map(lambda _i: read_operations(admin, [op]), range(16)))
        assert all(r[0]["state"] == "failed" for r in rows)
    finally:
        fleet.ensure(1)
    assert notification(click(admin, [op])) == ("success", "Operation completed 3")


def test_service_that_never_existed_fails_at_once(odoo, admin, broker):
    """A vhost where no service ever ran (no rpc exchange, no queue): an immediate, clear
    error, not a timeout."""
    [op] = create_operations(admin, [(1, 2)])
    set_bridge_params(admin, url=broker.uri(harness.EMPTY_VHOST), timeout=10)
    try:
        started = time.monotonic()
        kind, message = notification(click(admin, [op]))
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        harness.measure("service never existed (empty vhost): click answered in",
                        "%.2f s (rpc_timeout 10 s): %s" % (elapsed, message))
        assert kind == "danger"
        readable(message, broker)
        assert "not running" in message, message
        with pytest.raises(harness.RpcError) as caught:
            admin.call(harness.OPERATION, "compute_sum", 1, 2)
        assert caught.value.kind == 2
        readable(caught.value.message, broker)
    finally:
        set_bridge_params(admin, url=broker.uri(), timeout=RPC_TIMEOUT)
    assert notification(click(admin, [op])) == ("success", "Operation completed 3")

"""compute_bridge/rpc (the addon's pure-Python client) against a real broker and real `nameko run`
processes, without Odoo: where each failure comes from, how long it takes, what it says.

No consumer, SIGKILL mid-batch and broker restarts are tested through Odoo (test_20, test_30),
which exercises this same client; here are the cheap, Odoo-independent failures."""

import threading
import time

import faults_harness as harness
import pytest

TIMEOUT = 2.0
SLACK = 1.0  # "within the timeout + 1 s"
BUSY_DELAY = 0.5  # seconds per compute call: the workers are busy when the broker stops
BUSY_CALLS = 40


@pytest.fixture(scope="module")
def bridge():
    try:
        return harness.load_bridge_rpc()
    except FileNotFoundError:
        pytest.skip("compute_bridge/rpc does not exist yet")


def config(bridge, url, timeout=TIMEOUT):
    return bridge.BridgeConfig(url, timeout, False)


def assert_clean(broker, error):
    text = str(error)
    assert text and "Traceback" not in text
    assert broker.password_token not in text
    assert harness.urllib.parse.quote(broker.password, safe="") not in text


def test_refused_port_fails_fast_and_readably(bridge, broker_up):
    url = broker_up.uri().replace(":%d" % broker_up.node.amqp_port, ":%d" % harness.free_port())
    started = time.monotonic()
    with pytest.raises(bridge.BrokerUnreachable) as caught:
        bridge.call(config(bridge, url), "compute", "method", 1, 2)
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert_clean(broker_up, caught.value)
    assert "Cannot reach the message broker" in str(caught.value)


def test_silent_broker_fails_within_the_timeout(bridge, broker_up):
    """Something accepts the TCP connection and never speaks AMQP (a frozen node, a firewall
    that accepts): only the client's own timeout can end the wait."""
    with harness.socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = broker_up.uri().replace(":%d" % broker_up.node.amqp_port,
                                      ":%d" % silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(bridge.BrokerUnreachable) as caught:
            bridge.call(config(bridge, url), "compute", "method", 1, 2)
        assert time.monotonic() - started < TIMEOUT + SLACK
    assert_clean(broker_up, caught.value)


def test_wrong_password_is_unreachable_without_echoing_it(bridge, broker_up):
    url = broker_up.uri().replace(harness.urllib.parse.quote(broker_up.password, safe=""),
                                  "wrong-" + broker_up.password_token)
    started = time.monotonic()
    with pytest.raises(bridge.BrokerUnreachable) as caught:
        bridge.call(config(bridge, url), "compute", "method", 1, 2)
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert "wrong-" not in str(caught.value)
    assert_clean(broker_up, caught.value)


def test_service_that_never_existed_fails_at_once(bridge, one_service):
    broker = one_service.broker
    for url, service in ((broker.uri(harness.EMPTY_VHOST), "compute"),
                         (broker.uri(), "no_such_service")):
        started = time.monotonic()
        with pytest.raises(bridge.BridgeError) as caught:
            bridge.call(config(bridge, url, timeout=5), service, "method", 1, 2)
        assert time.monotonic() - started < 1.5, (url, service)
        assert isinstance(caught.value, bridge.ServiceUnavailable), repr(caught.value)
        assert_clean(broker, caught.value)


def test_service_busy_when_the_broker_stops_lives_on(bridge, broker_up, fleet):
    """The broker stops while the service's workers compute: their replies cannot be sent.
    The service says so and lives on (nameko kills a container whose worker cannot reply),
    and consumes again once the broker is back."""
    fleet.stop_all()
    service = fleet.start_slow(BUSY_DELAY)
    try:
        batch = threading.Thread(target=bridge.call_many, daemon=True, args=(
            config(bridge, broker_up.uri(), timeout=60), "compute", "method",
            [(i, 1) for i in range(BUSY_CALLS)]))
        batch.start()
        harness.wait_until(lambda: service.computed() >= 3, 30, interval=0.02,
                           what="the workers busy")
        broker_up.stop()
        harness.wait_until(lambda: not service.alive or "the reply could not be sent"
                           in service.log(), 60, what="a reply failing without the broker")
        assert service.alive, service.log()[-3000:]
        broker_up.node.start()
        harness.wait_until(lambda: service.consuming(broker_up), 60, what="consuming again")
        assert bridge.call(config(bridge, broker_up.uri()), "compute", "method", 2, 3) == 5
        assert "Traceback" not in service.log()
    finally:
        fleet.stop(service)

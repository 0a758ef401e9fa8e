"""compute_bridge/rpc (the addon's pure-Python client) against a real broker and real `nameko run`
processes, without Odoo: where each failure comes from, how long it takes, what it says.

No consumer, SIGKILL mid-batch and broker restarts are tested through Odoo (test_20, test_30),
which exercises this same client; here are the cheap, Odoo-independent failures."""

import time

import faults_harness as harness
import pytest

TIMEOUT = 2.0
SLACK = 1.0  # "within the timeout + 1 s"


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

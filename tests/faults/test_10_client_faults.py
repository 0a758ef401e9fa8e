"""compute_bridge/rpc (the addon's pure-Python client) against a real broker and real `nameko run`
processes, without Odoo: where each failure comes from, how long it takes, what it says."""

import threading
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


def test_queue_without_consumer_times_out_after_rpc_timeout(bridge, one_service):
    broker, fleet = one_service.broker, one_service
    assert bridge.call(config(bridge, broker.uri()), "compute", "method", 2, 3) == 5
    fleet.stop_all()
    harness.wait_until(lambda: broker.consumers() == 0, 20, what="no consumer")
    assert broker.queue() is not None  # the queue is still there, durable
    started = time.monotonic()
    with pytest.raises(bridge.ServiceTimeout) as caught:
        bridge.call(config(bridge, broker.uri()), "compute", "method", 2, 3)
    elapsed = time.monotonic() - started
    assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + SLACK
    assert_clean(broker, caught.value)
    fleet.ensure(1)
    assert bridge.call(config(bridge, broker.uri()), "compute", "method", 2, 3) == 5


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


def test_sigkill_one_of_two_instances_mid_batch(bridge, broker_up, fleet):
    """400 requests over call_async; one of two instances dies holding prefetched, unacked
    requests: RabbitMQ redelivers them to the survivor and every reply still arrives."""
    fleet.stop_all()
    victim, _survivor = fleet.start_many(2, delay=0.1)
    before = broker_up.redelivered()
    pairs = [(i, i * 0.5) for i in range(400)]
    box = {}

    def batch():
        box["outcomes"] = bridge.call_many(config(bridge, broker_up.uri(), timeout=30),
                                           "compute", "method", pairs)

    thread = threading.Thread(target=batch)
    started = time.monotonic()
    try:
        thread.start()
        harness.wait_until(lambda: victim.computed() >= 5, 30, interval=0.02,
                           what="the victim computing")
        fleet.kill(victim)
        thread.join(60)
        assert not thread.is_alive(), "the batch never finished"
        outcomes = box["outcomes"]
        assert len(outcomes) == 400
        wrong = [(pair, o) for pair, o in zip(pairs, outcomes, strict=True)
                 if o.error is not None or o.value != pair[0] + pair[1]]
        assert not wrong, wrong[:5]
        assert time.monotonic() - started < 60
        harness.wait_until(lambda: broker_up.redelivered() > before, 15,
                           what="RabbitMQ counting redeliveries (the kill hit in-flight work)")
    finally:
        fleet.stop_all()

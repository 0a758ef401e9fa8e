"""A 400-record click while one of two service instances is killed with SIGKILL."""

import threading
import time

import faults_harness as harness
import pytest
from conftest import RPC_TIMEOUT, set_bridge_params
from faults_harness import click, create_operations, notification, read_operations

pytestmark = pytest.mark.odoo
BATCH = 400
GENEROUS_TIMEOUT = 60  # seconds: redelivery to the survivor must fit in it, with room to spare


def test_sigkill_one_instance_mid_batch(odoo, admin, broker, fleet):
    """Two instances share rpc-compute, each holding prefetched, unacknowledged requests; one
    dies mid-batch. RabbitMQ redelivers what it had not acknowledged to the survivor, the
    replies reach the Odoo worker within the timeout, and every record gets its right answer."""
    pairs = [(i, i / 4) for i in range(BATCH)]
    ops = create_operations(admin, pairs)
    fleet.stop_all()
    victim, survivor = fleet.start_many(2, delay=0.1)
    set_bridge_params(admin, timeout=GENEROUS_TIMEOUT)
    before = broker.redelivered()
    box = {}

    def press():
        started = time.monotonic()
        box["action"] = click(odoo.xmlrpc(timeout=GENEROUS_TIMEOUT * 2), ops)
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=press)
    try:
        thread.start()
        harness.wait_until(lambda: victim.computed() >= 5, 60, interval=0.02,
                           what="the victim computing")
        fleet.kill(victim)
        killed_after = victim.computed()
        thread.join(GENEROUS_TIMEOUT * 2)
        assert not thread.is_alive(), "the click never returned"
        kind, message = notification(box["action"])
        assert kind == "success", message
        rows = read_operations(admin, ops)
        wrong = [(row, a + b) for row, (a, b) in zip(rows, pairs, strict=True)
                 if row["state"] != "done" or row["result"] != a + b]
        assert not wrong, wrong[:5]
        assert box["elapsed"] < GENEROUS_TIMEOUT
        harness.measure("SIGKILL mid-batch", "%d records right in %.1f s; victim had started %d "
                        "requests, survivor %d" % (BATCH, box["elapsed"], killed_after,
                                                   survivor.computed()))
        assert killed_after < BATCH and survivor.computed() > 0
        harness.wait_until(lambda: broker.redelivered() > before, 15,
                           what="RabbitMQ counting redeliveries (the kill hit in-flight work)")
    finally:
        set_bridge_params(admin, timeout=RPC_TIMEOUT)
        fleet.stop_all()

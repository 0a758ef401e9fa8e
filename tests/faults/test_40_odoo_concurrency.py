"""Many users pressing the button at once, against a prefork Odoo (FAULTS_ODOO_WORKERS, 4)."""

import concurrent.futures
import time

import faults_harness as harness
import pytest
from faults_harness import click, create_operations, notification, read_operations

pytestmark = pytest.mark.odoo
CLIENTS = 20
CLICKS = 25


def test_20_clients_25_clicks_each(odoo, admin):
    def one_client(n):
        client = odoo.xmlrpc("cb_user", "cb_user")
        pairs = [(n * 1000 + i, 0.25) for i in range(CLICKS)]
        ops = create_operations(client, pairs)
        answers = [notification(click(client, [op])) for op in ops]
        return ops, pairs, answers

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(one_client, range(CLIENTS)))
    elapsed = time.monotonic() - started
    errors = [(n, a) for n, (_o, _p, answers) in enumerate(results) for a in answers
              if a[0] != "success"]
    assert not errors, errors[:5]
    for ops, pairs, _answers in results:
        rows = read_operations(admin, ops)
        wrong = [(row, a + b) for row, (a, b) in zip(rows, pairs, strict=True)
                 if (row["state"], row["result"], row["error_message"]) != ("done", a + b, False)]
        assert not wrong, wrong[:5]
    harness.measure("concurrency", "%d clicks by %d XML-RPC clients on %d prefork workers in "
                    "%.1f s, all right" % (CLIENTS * CLICKS, CLIENTS, odoo.workers, elapsed))

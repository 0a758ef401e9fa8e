"""Odoo retries a request that hit a serialization failure: the record ends with one result.

action_suma locks its records before it calls the service, so a rival writer holding a row
makes the click wait *before* the call; when the rival commits, the lock fails with a
serialization failure, Odoo retries the request, and the service is called once. (A failure
after the call would call it again: compute.method is pure, so that too would write the same
sum once; a service with side effects would need an idempotency key.)
"""

import threading
import time

import faults_harness as harness
import psycopg2
import pytest
from conftest import pg_settings
from faults_harness import click, create_operations, notification, read_operations

pytestmark = pytest.mark.odoo


def test_serialization_failure_retry_leaves_one_consistent_result(odoo, admin, fleet):
    """A second writer holds the row when the click starts; it commits, the click's lock fails
    with a serialization failure, Odoo rolls back, waits and runs the whole request again, and
    the record ends done with the one right result, the service called once."""
    a, b = 123456, 0.5  # a sum no other test computes: its notify lines can be counted
    expected_line = "Operation completed %s" % (a + b)
    [op] = create_operations(admin, [(a, b)])
    counted_before = sum(log.count(expected_line) for log in fleet.logs().values())
    pg = pg_settings()
    rival = psycopg2.connect(dbname=odoo.db, host=pg["host"], port=pg["port"], user=pg["user"],
                             password=pg["password"])
    watcher = psycopg2.connect(dbname=odoo.db, host=pg["host"], port=pg["port"],
                               user=pg["user"], password=pg["password"])
    watcher.autocommit = True
    box = {}
    try:
        with rival.cursor() as cr:  # takes the row lock; commits later
            cr.execute("UPDATE compute_operation SET write_date = now() WHERE id = %s", [op])

        def press():
            box["action"] = click(odoo.xmlrpc(timeout=60), [op])

        thread = threading.Thread(target=press)
        thread.start()

        def click_waits_on_the_lock():
            with watcher.cursor() as cr:
                cr.execute("SELECT wait_event_type, state, left(query, 80) FROM pg_stat_activity"
                           " WHERE datname = %s AND pid <> pg_backend_pid()", [odoo.db])
                box["activity"] = cr.fetchall()
            return any(row[0] == "Lock" for row in box["activity"]) or not thread.is_alive()

        harness.wait_until(click_waits_on_the_lock, 20, interval=0.05,
                           what="the click's UPDATE waiting for the rival's lock")
        assert thread.is_alive(), ("the click ended without waiting for the rival's lock",
                                   box, odoo.log()[-3000:])
        rival.commit()  # → the click's UPDATE: could not serialize access (concurrent update)
        thread.join(60)
        assert not thread.is_alive()
    finally:
        rival.close()
        watcher.close()
    assert notification(box["action"]) == ("success", expected_line)
    [row] = read_operations(admin, [op])
    assert (row["state"], row["result"], row["error_message"]) == ("done", a + b, False), row
    assert "SERIALIZATION_FAILURE" in odoo.log(), "Odoo did not log a retried request"
    # the lock comes before the call: only the retried request reached the service
    harness.wait_until(
        lambda: sum(log.count(expected_line) for log in fleet.logs().values())
        - counted_before >= 1, 10, what="notify logging the operation")
    time.sleep(0.5)
    calls = sum(log.count(expected_line) for log in fleet.logs().values()) - counted_before
    assert calls == 1, calls
    harness.measure("serialization failure", "request retried by Odoo, service called %d times, "
                    "record done with %s once" % (calls, row["result"]))

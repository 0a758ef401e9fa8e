"""The Odoo source and a PostgreSQL server, for the deployment tests of this folder.

These tests run in the services layer (tools/test.sh), which starts the broker only: PostgreSQL is
taken from ``PG*`` when ``PGHOST`` is set, else started with ``tools/stack.py up postgres`` (the
project's one way to start it), which tools/test.sh stops on exit (`make clean` otherwise). The
Odoo source is found (or downloaded where allowed) by ``tools/stack.py odoo-src``; without one
the tests skip with a loud reason.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = [sys.executable, os.path.join(REPO, "tools", "stack.py")]
STACK_TIMEOUT = 300  # seconds: may download the Odoo source or initialise a cluster
PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD")


def odoo_src():
    """The Odoo 18.0 source folder; skips the calling test loudly when there is none."""
    found = os.environ.get("ODOO_SRC") or subprocess.run(
        [*STACK, "odoo-src"], capture_output=True, text=True, timeout=STACK_TIMEOUT, check=False,
    ).stdout.strip()
    if not found:
        pytest.skip("!!! no Odoo 18.0 source ($ODOO_SRC, the cache, or a download): the "
                    "deployment tests that run Odoo are NOT run !!!")
    return found


def postgres_env():
    """{PGHOST, PGPORT, PGUSER[, PGPASSWORD]} of a reachable PostgreSQL superuser."""
    if os.environ.get("PGHOST"):
        return {key: os.environ[key] for key in PG_VARIABLES if os.environ.get(key)}
    subprocess.run([*STACK, "up", "postgres"], check=True, timeout=STACK_TIMEOUT,
                   stdout=subprocess.DEVNULL)
    state = json.loads(subprocess.run([*STACK, "state"], capture_output=True, text=True,
                                      check=True, timeout=STACK_TIMEOUT).stdout)
    return {key: state[key] for key in PG_VARIABLES if state.get(key)}


def psql(pg_env, sql, database="postgres"):
    """One statement through psql; its rows as text."""
    result = subprocess.run(
        ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
        env=dict(os.environ, **pg_env), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def drop_database(pg_env, name):
    psql(pg_env, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def database_name(suffix):
    return "%s_%s" % (os.environ.get("COMPUTE_BRIDGE_TEST_DB", "cb_test"), suffix)

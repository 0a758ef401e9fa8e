"""Wake Odoo's cron threads over one kept connection per process.

Odoo's cron threads LISTEN on the channel ``cron_trigger`` of PostgreSQL's own database
``postgres``. ``ir.cron._notifydb`` opens a connection to that database for every NOTIFY, and
Odoo's pool never keeps one to it (``sql_db.Cursor`` closes connections to ``postgres``): a new
connection and its authentication on every click that queues a background call. This module
keeps one instead, per process: a prefork worker gets its own, never the one its master made.
"""

import logging
import os
import threading

import psycopg2
from psycopg2 import sql

from odoo import sql_db

from odoo.addons.base.models.ir_cron import ODOO_NOTIFY_FUNCTION

_logger = logging.getLogger(__name__)

CRON_CHANNEL = "cron_trigger"  # what ir.cron's threads LISTEN to (odoo/service/server.py)
LISTEN_DATABASE = "postgres"

_lock = threading.Lock()
_connection = None
# Connections inherited from the parent at a fork: closing them here would end the parent's
# session (they share its socket), so they are kept, unused, for the life of the process.
_inherited = []


def notify_cron_threads(dbname):
    """Tell the cron threads of every Odoo server on this PostgreSQL that a trigger of
    ``dbname`` is due. Never raises: a notification lost here is made up for by the cron
    threads' own poll (a minute at most)."""
    global _connection
    query = sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(ODOO_NOTIFY_FUNCTION))
    with _lock:
        for attempt in (1, 2):  # a kept connection the server has closed meanwhile: once more
            try:
                if _connection is None:
                    _connection = _connect()
                with _connection.cursor() as cr:
                    cr.execute(query, (CRON_CHANNEL, dbname))
                return
            except psycopg2.Error as error:
                _close()
                if attempt == 2:
                    _logger.warning("compute.bridge: could not wake the cron threads "
                                    "(their poll will): %s", error)


def _connect():
    _dbname, connection_info = sql_db.connection_info_for(LISTEN_DATABASE)
    connection = psycopg2.connect(**connection_info)
    connection.autocommit = True
    return connection


def _close():
    global _connection
    if _connection is not None:
        try:
            _connection.close()
        except psycopg2.Error:
            _logger.debug("compute.bridge: closing a broken notify connection", exc_info=True)
        _connection = None


def _forget_the_parents_connection():
    global _connection, _lock
    if _connection is not None:
        _inherited.append(_connection)
        _connection = None
    _lock = threading.Lock()  # the parent's may have been held by another of its threads


os.register_at_fork(after_in_child=_forget_the_parents_connection)

"""``make run``: PostgreSQL, RabbitMQ, the Nameko services and Odoo with compute_bridge installed
on a ready database, in the foreground. Ctrl-C, SIGTERM (to it or its process group) or SIGHUP
stop everything it started, and only that.

Settings (environment): AMQP_URI, RABBIT_API_URI, PGHOST/PGPORT (see :mod:`.broker`,
:mod:`.postgres`), ODOO_HTTP_PORT (8069), COMPUTE_BRIDGE_DB (compute_bridge), HEARTBEAT_INTERVAL.
"""

import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse

from . import broker, postgres
from .common import RUN_DIR, STATE_FILE, read_state, write_state
from .nameko_run import NamekoRun, wait_compute
from .odoo_server import OdooServer, find_odoo_src, write_odoo_conf
from .process import Stopped, ignore_stop_signals, stop_on_signals

DEFAULT_HTTP_PORT = 8069
DEFAULT_DB = "compute_bridge"
GEVENT_PORT_OFFSET = 3  # Odoo's own pair of defaults: 8069 and 8072
WATCH_INTERVAL = 1.0
SECRET_BYTES = 24

BANNER = """
================================================================================
 compute_bridge answers at http://localhost:%(port)d
 Log in as admin / admin, open Compute Bridge > Operations, create a record with
 99999 and 99999 and press "Suma": the result is 199998.
 RabbitMQ management UI: %(api)s
 Ctrl-C stops Odoo, the services, and what this command started.
================================================================================
"""

NO_ODOO = """!!!!!!!! No Odoo 18.0 source found ($ODOO_SRC, ~/.cache/compute_bridge/odoo-18.0):
!!!!!!!! running RabbitMQ and the services only.
Try: .venv/bin/nameko shell --broker %s   then   n.rpc.compute.method(99999, 99999)"""


def say(text):
    print(text, flush=True)


def public_url(uri):
    """``uri`` without its credentials, for a banner."""
    parts = urllib.parse.urlsplit(uri)
    return "%s://%s:%s/" % (parts.scheme, parts.hostname, parts.port)


def heartbeat_secret():
    """One secret shared by the services (which POST heartbeats) and Odoo (which checks them),
    kept across runs."""
    path = os.path.join(RUN_DIR, "heartbeat_secret")
    if not os.path.exists(path) or not os.path.getsize(path):
        with open(path, "w") as handle:
            handle.write(secrets.token_urlsafe(SECRET_BYTES))
    with open(path) as handle:
        return handle.read().strip()


def prefix_lines(stream, prefix):
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()


class Run:
    def __init__(self):
        self.state = {}
        self.processes = []  # (label, process): stopped in reverse order

    def start(self):
        os.makedirs(RUN_DIR, exist_ok=True)
        odoo_src = find_odoo_src()
        self.state = read_state()
        broker.up(self.state)
        if odoo_src:
            postgres.up(self.state)
        write_state(self.state)
        os.environ.update(self.state)
        amqp_uri = self.state["AMQP_URI"]
        secret = heartbeat_secret()
        http_port = int(os.environ.get("ODOO_HTTP_PORT") or DEFAULT_HTTP_PORT)
        services_env = {"HEARTBEAT_SECRET": secret}
        if odoo_src:
            services_env["HEARTBEAT_URL"] = os.environ.get("HEARTBEAT_URL") or (
                "http://127.0.0.1:%d/compute_bridge/heartbeat" % http_port)

        say("==> starting the Nameko services: nameko run --broker <AMQP_URI> services")
        services = NamekoRun(["--broker", amqp_uri], extra_env=services_env,
                             output=subprocess.PIPE).start()
        self.processes.append(("services", services))
        threading.Thread(target=prefix_lines, args=(services.proc.stdout, b"[services] "),
                         daemon=True).start()
        wait_compute(amqp_uri, process=services)
        if not odoo_src:
            say(NO_ODOO % amqp_uri)
            return

        db = os.environ.get("COMPUTE_BRIDGE_DB") or DEFAULT_DB
        conf = os.path.join(RUN_DIR, "odoo-run.conf")
        write_odoo_conf(conf, http_port, ["http_interface=", "db_name=" + db, "log_level=info",
                                          "gevent_port=%d" % (http_port + GEVENT_PORT_OFFSET)])
        odoo = OdooServer(odoo_src, conf, db, http_port, env={
            "COMPUTE_BRIDGE_BROKER_URL": amqp_uri, "COMPUTE_BRIDGE_HEARTBEAT_SECRET": secret})
        update = ("-u", "compute_bridge")  # picks up changes to the addon since the last run
        if not odoo.db_exists():
            say("==> creating database %s with compute_bridge installed (about a minute)" % db)
            odoo.run("-i", "compute_bridge", "--log-level=warn")
            update = ()
        say("==> starting Odoo on database %s" % db)
        self.processes.append(("Odoo", odoo))
        odoo.start(*update)
        say(BANNER % {"port": http_port, "api": public_url(self.state["RABBIT_API_URI"])})

    def watch(self):
        """Until a stop signal, or until a process of ours ends by itself (then 1)."""
        while True:
            for label, process in self.processes:
                if process.proc.poll() is not None:
                    say("==> %s exited with %s" % (label, process.proc.returncode))
                    return 1
            time.sleep(WATCH_INTERVAL)

    def stop(self):
        ignore_stop_signals()
        if self.processes:
            say("\n==> stopping")
        for _label, process in reversed(self.processes):
            process.stop()
        broker.down(self.state)
        postgres.down(self.state)
        if os.path.exists(STATE_FILE):
            os.unlink(STATE_FILE)


def main():
    stop_on_signals()
    run = Run()
    try:
        run.start()
        return run.watch()
    except Stopped as stopped:
        return 128 + stopped.signum
    finally:
        run.stop()

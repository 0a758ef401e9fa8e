"""Fault tests: the real stack, broken on purpose.

Run as their own pytest process, never under tests/conftest.py (which monkey-patches eventlet
for the Nameko tests; Odoo and these clients must run unpatched)::

    .venv/bin/python -m pytest -c tests/faults/pytest-faults.ini --confcutdir=tests/faults \
        -p no:pytest_nameko -p no:odoo tests/faults

Session fixtures, each started once, with bounded waits, and always stopped:

- ``broker``: a private RabbitMQ node on its own ports (FAULTS_AMQP_PORT 5692, management
  FAULTS_API_PORT 15692; without them, the next free pair when another program has those), so
  stopping it never touches the dev broker; a user with a secret
  password, and an empty vhost where no service ever ran;
- ``fleet``: ``nameko run --broker <that node> services`` processes;
- ``odoo``: database ``cb_faults`` created with compute_bridge installed, then Odoo's HTTP server
  (prefork, FAULTS_ODOO_WORKERS=4 workers) with a log file, pointed at the private node through
  the system parameters, and test users (plain, manager, portal).
"""

import os
import sys
import threading
import time

import faults_harness as harness
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _monkey_patched():
    patcher = sys.modules.get("eventlet.patcher")
    return bool(patcher and patcher.is_monkey_patched("socket"))


PATCHED_WARNING = (
    "!!!!!!!! tests/faults skipped: this pytest process is eventlet-monkey-patched "
    "(tests/conftest.py). Run them on their own: tools/test.sh faults !!!!!!!!"
)

PATCHED = _monkey_patched()
if PATCHED:
    # Collected by a pytest process that loaded tests/conftest.py: refuse loudly, run nothing.
    collect_ignore_glob = ["*.py"]

DB = os.environ.get("COMPUTE_BRIDGE_FAULTS_DB", "cb_faults")
RPC_TIMEOUT = 3.0  # compute_bridge.rpc_timeout for most tests (seconds)
FAULTS_AMQP_PORT = 5692
USERS = {
    # login: (xml ids of its groups, password)
    "cb_user": (["base.group_user", "compute_bridge.group_compute_bridge_user"], "cb_user"),
    "cb_manager": (["base.group_user", "compute_bridge.group_compute_bridge_manager"],
                   "cb_manager"),
    "cb_portal": (["base.group_portal"], "cb_portal"),
}


def pytest_terminal_summary(terminalreporter):
    if PATCHED:
        terminalreporter.write_line(PATCHED_WARNING, red=True, bold=True)
    if harness.MEASURED:
        terminalreporter.section("fault tests: what was observed")
        for name, value in harness.MEASURED.items():
            terminalreporter.write_line("%s: %s" % (name, value))


def pytest_configure(config):
    config.addinivalue_line("markers", "odoo: needs the Odoo source and a running Odoo server")


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def run_dir():
    path = harness.RUN_DIR
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.startswith("services-") and name.endswith(".log"):
            os.unlink(os.path.join(path, name))
    return path


def fault_broker_ports():
    """(AMQP, management) ports of the private node: from the environment, else the defaults,
    else (another program listens there) the first free pair after them."""
    offset = harness.harness_broker.API_PORT_OFFSET
    if os.environ.get("FAULTS_AMQP_PORT"):
        return (int(os.environ["FAULTS_AMQP_PORT"]),
                int(os.environ.get("FAULTS_API_PORT") or FAULTS_AMQP_PORT + offset))
    ports = harness.harness_broker.ports_for_nodes(["faults"], [FAULTS_AMQP_PORT])
    if ports:
        return ports[0], ports[0] + offset
    pytest.exit("no free ports for the fault tests' RabbitMQ node: set FAULTS_AMQP_PORT", 2)


@pytest.fixture(scope="session")
def broker(run_dir):
    node = harness.FaultBroker(*fault_broker_ports())
    started = time.monotonic()
    try:
        node.start()
        sys.stderr.write("[faults] private broker up in %.1fs\n" % (time.monotonic() - started))
        yield node
    finally:
        node.shutdown()


@pytest.fixture()
def broker_up(broker):
    """The node running (a test that stopped it and failed must not break the next ones)."""
    if not broker.node.running():
        broker.node.start()
    return broker


@pytest.fixture(scope="session")
def fleet(broker, run_dir):
    services = harness.ServiceFleet(broker, run_dir)
    try:
        yield services
    finally:
        services.stop_all()
        for service in services.processes:
            if service.alive:
                services.kill(service)


@pytest.fixture()
def one_service(broker_up, fleet):
    fleet.ensure(1)
    return fleet


# ---------------------------------------------------------------------------------------------
def find_odoo_src():
    """(source folder, None) or (None, why the Odoo tests cannot run)."""
    src = harness.odoo_server.find_odoo_src(download=False)
    if not src:
        return None, "no Odoo 18.0 source ($ODOO_SRC or ~/.cache/compute_bridge/odoo-18.0)"
    if not os.path.exists(os.path.join(harness.REPO, "compute_bridge", "__manifest__.py")):
        return None, "compute_bridge/__manifest__.py does not exist yet"
    return src, None


def pg_settings():
    """PostgreSQL as the Odoo server of these tests reaches it (tools/harness, from PG*)."""
    return harness.odoo_server.pg_settings()


class OdooStartup:
    """Creating the database (~30-60 s) and starting Odoo need neither the broker nor the
    services: they run in a thread from collection on, while the broker node starts."""

    def __init__(self, src):
        os.makedirs(harness.RUN_DIR, exist_ok=True)
        self.server = harness.OdooServer(src, DB, harness.RUN_DIR,
                                         workers=int(os.environ.get("FAULTS_ODOO_WORKERS", 4)))
        self.server.heartbeat_secret = "hb-" + harness.secrets.token_hex(12)
        self.server.env["COMPUTE_BRIDGE_HEARTBEAT_SECRET"] = self.server.heartbeat_secret
        self.error = None
        self.thread = threading.Thread(target=self._run, name="odoo-startup", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            started = time.monotonic()
            self.server.create_db()
            self.server.created_in = time.monotonic() - started
            self.server.start()
        except BaseException as error:  # noqa: BLE001 - re-raised by result()
            self.error = error

    def result(self, timeout=600):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("Odoo did not start within %ss" % timeout)
        if self.error is not None:
            raise self.error
        return self.server


_startup = {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if any("odoo" in getattr(item, "fixturenames", ()) for item in items):
        src, _why = find_odoo_src()
        if src:
            _startup["odoo"] = OdooStartup(src)


def pytest_sessionfinish(session, exitstatus):
    startup = _startup.pop("odoo", None)
    if startup is not None:
        startup.thread.join(600)
        startup.server.stop()


@pytest.fixture(scope="session")
def odoo(broker, fleet):
    src, why = find_odoo_src()
    if not src:
        pytest.skip(why)
    startup = _startup.get("odoo") or _startup.setdefault("odoo", OdooStartup(src))
    server = startup.result()
    sys.stderr.write("[faults] %s created with compute_bridge in %.1fs\n"
                     % (DB, server.created_in))
    try:
        admin = server.xmlrpc()
        set_bridge_params(admin, broker.uri(), RPC_TIMEOUT)
        server.users = create_users(admin)
        fleet.env.update(HEARTBEAT_URL=server.url + "/compute_bridge/heartbeat",
                         HEARTBEAT_SECRET=server.heartbeat_secret, HEARTBEAT_INTERVAL="5")
        yield server
    finally:
        server.stop()
        for key in ("HEARTBEAT_URL", "HEARTBEAT_SECRET", "HEARTBEAT_INTERVAL"):
            fleet.env.pop(key, None)


def set_bridge_params(admin, url=None, timeout=None):
    if url is not None:
        admin.call("ir.config_parameter", "set_param", "compute_bridge.broker_url", url)
    if timeout is not None:
        admin.call("ir.config_parameter", "set_param", "compute_bridge.rpc_timeout",
                   str(timeout))


def xmlid_to_id(admin, xmlid):
    module, name = xmlid.split(".")
    rows = admin.call("ir.model.data", "search_read",
                      [("module", "=", module), ("name", "=", name)], fields=["res_id"])
    if not rows:
        raise LookupError("no such xml id: %s (check the addon's security XML)" % xmlid)
    return rows[0]["res_id"]


def create_users(admin):
    users = {}
    for login, (groups, password) in USERS.items():
        group_ids = [xmlid_to_id(admin, xmlid) for xmlid in groups]
        uid = admin.call("res.users", "create", {
            "name": login, "login": login, "password": password,
            "groups_id": [(6, 0, group_ids)],
        })
        users[login] = (uid, password)
    return users


@pytest.fixture()
def admin(odoo, one_service):
    """Admin over XML-RPC, the bridge pointed at the private node with the default timeout, one
    service running."""
    client = odoo.xmlrpc()
    set_bridge_params(client, one_service.broker.uri(), RPC_TIMEOUT)
    return client


@pytest.fixture()
def user_client(odoo):
    return odoo.xmlrpc("cb_user", "cb_user")

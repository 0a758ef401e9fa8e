"""The real parts the fault tests break on purpose, and the clients they talk to them with.

- :class:`FaultBroker`: a private RabbitMQ node (tools/harness's ``RabbitNode``) on its own
  ports, with a user whose password is a secret we then look for in every log and message;
- :class:`ServiceFleet`: ``nameko run --broker <uri> services`` processes, started and killed;
- :class:`OdooServer`: tools/harness's Odoo server on one database, with a log file;
- :class:`XmlRpc` / :class:`JsonRpc`: one user's calls over ``/xmlrpc/2/object`` and ``/jsonrpc``.

Every wait here is bounded; every process is started in its own session and stopped by its
process group at the end (tools/harness/process.py).
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket  # noqa: F401 - the tests reach it as harness.socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import xmlrpc.client

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tools.harness import broker as harness_broker  # noqa: E402
from tools.harness import odoo_server, postgres  # noqa: E402, F401 - the tests use postgres
from tools.harness.common import RUN_DIR as HARNESS_RUN_DIR  # noqa: E402
from tools.harness.common import free_port, port_open, wait_until  # noqa: E402, F401
from tools.harness.nameko_run import NamekoRun  # noqa: E402

PY = odoo_server.venv_bin("python")
RUN_DIR = os.path.join(HARNESS_RUN_DIR, "faults")
SERVICE_STOP_GRACE = 10  # seconds

MEASURED = {}  # what the tests observed (times, messages): printed at the end of the run


def measure(name, value):
    MEASURED[name] = value


COMPUTE_QUEUE = "rpc-compute"
SLOW_QUEUE = "rpc-slow"  # slow_services.py's SlowService
EMPTY_VHOST = "cb-faults-empty"  # a vhost where no service ever ran
BROKER_USER = "cb_faults"


# ---------------------------------------------------------------------------------------------
class FaultBroker:
    """A RabbitMQ node of our own, which tests may stop, restart and wipe."""

    def __init__(self, amqp_port, api_port):
        self.node = harness_broker.RabbitNode("faults", amqp_port=amqp_port, api_port=api_port)
        # URL-special characters on purpose: the password must survive quoting, and masking.
        self.password = "Pw%s@/:" % secrets.token_hex(8)
        self.password_token = self.password[:18]  # what we grep for (quoted or not)

    # -- lifecycle
    def start(self):
        if self.node.leftover():  # from an interrupted run
            self.node.stop()
        shutil.rmtree(self.node.base, ignore_errors=True)
        self.node.start()
        self.node.ctl("add_user", BROKER_USER, self.password)
        self.node.ctl("set_permissions", "-p", "/", BROKER_USER, ".*", ".*", ".*")
        self.node.ctl("add_vhost", EMPTY_VHOST)
        self.node.ctl("set_permissions", "-p", EMPTY_VHOST, BROKER_USER, ".*", ".*", ".*")

    def stop(self):
        self.node.stop(kill_epmd=False)
        wait_until(lambda: not port_open(self.node.host, self.node.amqp_port), 30,
                   what="broker port closed")

    def crash(self):
        """SIGKILL the node's Erlang VM: connections drop without a close frame."""
        os.kill(self.node.pid(), signal.SIGKILL)
        wait_until(lambda: not port_open(self.node.host, self.node.amqp_port), 30,
                   what="broker port closed")

    def restart_node(self):
        """Stop the node's Erlang VM and start it again: every connection dies, queues survive
        (durable, on disk)."""
        self.stop()
        self.node.start()

    def shutdown(self):
        """End of session: a throwaway node, wiped at the next start, needs no graceful stop."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError,
                                 TimeoutError):
            self.crash()
        if self.node.running():
            self.node.stop(kill_epmd=False)
        self.node.kill_epmd()

    # -- addresses
    def uri(self, vhost="/"):
        quoted = urllib.parse.quote(self.password, safe="")
        path = "" if vhost == "/" else "/" + urllib.parse.quote(vhost, safe="")
        return "pyamqp://%s:%s@%s:%d%s" % (BROKER_USER, quoted, self.node.host,
                                           self.node.amqp_port, path)

    @property
    def guest_uri(self):
        return self.node.amqp_uri

    # -- management API (guest works from localhost)
    def api(self, path):
        return harness_broker.api_request(self.node.api_uri, path, timeout=5)

    def queue(self, name=COMPUTE_QUEUE, vhost="/"):
        try:
            return self.api("queues/%s/%s" % (urllib.parse.quote(vhost, safe=""), name))
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def redelivered(self, name=COMPUTE_QUEUE):
        """Messages RabbitMQ redelivered from this queue (management stats: a few s late)."""
        queue = self.queue(name) or {}
        return (queue.get("message_stats") or {}).get("redeliver", 0)

    def consumer_ports(self, name=COMPUTE_QUEUE, vhost="/"):
        """Client-side TCP ports of the consumers of queue ``name``. /api/consumers follows
        consumer events at once, where a queue's "consumers" count lags by a stats interval."""
        rows = self.api("consumers/%s" % urllib.parse.quote(vhost, safe=""))
        return [row["channel_details"]["peer_port"] for row in rows
                if row["queue"]["name"] == name]

    def consumers(self, name=COMPUTE_QUEUE):
        return len(self.consumer_ports(name))


# ---------------------------------------------------------------------------------------------
class ServiceProcess(NamekoRun):
    """One ``nameko run`` of the fleet: one consumer of rpc-compute."""

    def __init__(self, label, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label
        self.log_path = self.output

    def local_ports(self):
        import psutil

        try:
            return {c.laddr.port for c in psutil.Process(self.proc.pid).connections("tcp")}
        except psutil.Error:
            return set()

    def computed(self):
        """How many requests this slow_services instance has started."""
        return self.log().count("slow-compute ")

    def consuming(self, broker, queue=COMPUTE_QUEUE):
        return bool(self.local_ports() & set(broker.consumer_ports(queue)))


class ServiceFleet:
    """``nameko run`` processes against the fault broker; each is one consumer of rpc-compute."""

    def __init__(self, broker, log_dir):
        self.broker = broker
        self.log_dir = log_dir
        # Extra environment for the next processes (HEARTBEAT_URL, ...). DEBUG: notify logs
        # each operation at that level, and the tests count those lines.
        self.env = {"LOG_LEVEL": "DEBUG"}
        self.processes = []
        self._count = 0

    @property
    def running(self):
        return [p for p in self.processes if p.alive]

    def start_slow(self, delay, wait=True):
        """An instance of tests/faults/slow_services.py: compute.method sleeps ``delay`` s."""
        return self.start("slow_services", wait=wait, extra_env={
            "PYTHONPATH": os.path.dirname(os.path.abspath(__file__)),
            "FAULTS_COMPUTE_DELAY": str(delay),
        })

    def start_slow_service(self, delay):
        """Only the ``slow`` service of tests/faults/slow_services.py: ``slow.method`` adds
        after ``delay`` s. Stop it at the end (it is one of :attr:`running`)."""
        return self.start("slow_services:SlowService", queue=SLOW_QUEUE, extra_env={
            "PYTHONPATH": os.path.dirname(os.path.abspath(__file__)),
            "FAULTS_SLOW_DELAY": str(delay),
        })

    def start(self, module="services", wait=True, extra_env=None, queue=COMPUTE_QUEUE):
        self._count += 1
        label = "services-%d" % self._count
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # no Odoo on the services' path
        service = ServiceProcess(label, ["--broker", self.broker.uri()], module, env=env,
                                 extra_env={**self.env, **(extra_env or {})},
                                 output=os.path.join(self.log_dir, label + ".log")).start()
        self.processes.append(service)
        if wait:
            try:
                wait_until(lambda: not service.alive or service.consuming(self.broker, queue),
                           60, what="%s consuming %s" % (label, queue))
            except TimeoutError:
                raise RuntimeError("%s did not start:\n%s"
                                   % (label, service.log()[-3000:])) from None
            if not service.alive:
                raise RuntimeError("%s died at start:\n%s" % (label, service.log()[-3000:]))
        return service

    def kill(self, service, sig=signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.proc.pid, sig)
        service.proc.wait(15)

    def stop(self, service):
        service.stop(SERVICE_STOP_GRACE)

    def stop_all(self):
        for service in self.running:
            self.stop(service)

    def start_many(self, count, delay=None):
        """Start ``count`` instances at once (a cold `nameko run` takes seconds) and wait."""
        started = [self.start_slow(delay, wait=False) if delay is not None
                   else self.start(wait=False) for _i in range(count)]
        wait_until(lambda: all(s.consuming(self.broker) or not s.alive for s in started), 60,
                   what="%d new instances consuming" % count)
        dead = [s for s in started if not s.alive]
        if dead:
            raise RuntimeError("%s died at start:\n%s" % (dead[0].label, dead[0].log()[-3000:]))
        return started

    def ensure(self, count=1):
        """Exactly ``count`` live instances, each consuming (after a broker restart they
        reconnect on their own; wait for that)."""
        while len(self.running) > count:
            self.stop(self.running[-1])
        if len(self.running) < count:
            self.start_many(count - len(self.running))
        wait_until(lambda: all(p.consuming(self.broker) for p in self.running), 60,
                   what="%d consumer(s) on %s" % (count, COMPUTE_QUEUE))

    def logs(self):
        return {p.label: p.log() for p in self.processes if os.path.exists(p.log_path)}


# ---------------------------------------------------------------------------------------------
class RpcError(Exception):
    """A call answered with an error: ``message`` is what the caller reads."""

    def __init__(self, transport, kind, message, raw=None):
        super().__init__("%s %s: %s" % (transport, kind, message))
        self.transport = transport
        self.kind = kind  # XML-RPC faultCode / JSON-RPC data.name
        self.message = message
        self.raw = raw


class HttpFailure(Exception):
    """Not an RPC answer at all: HTTP 5xx, a dropped connection, an unparsable body."""


class XmlRpc:
    transport = "XML-RPC"

    def __init__(self, url, db, login, password, timeout=60):
        self.url, self.db, self.login, self.password = url, db, login, password
        self.timeout = timeout
        common = self._proxy("common")
        self.uid = common.authenticate(db, login, password, {})
        if not self.uid:
            raise RuntimeError("cannot log in as %s" % login)

    def _proxy(self, service):
        transport = _TimeoutTransport(self.timeout)
        return xmlrpc.client.ServerProxy("%s/xmlrpc/2/%s" % (self.url, service),
                                         allow_none=True, transport=transport)

    def call(self, model, method, *args, **kwargs):
        try:
            return self._proxy("object").execute_kw(self.db, self.uid, self.password, model,
                                                    method, list(args), kwargs)
        except xmlrpc.client.Fault as fault:
            raise RpcError(self.transport, fault.faultCode, fault.faultString, fault) from None
        except xmlrpc.client.ProtocolError as error:
            raise HttpFailure("HTTP %s %s" % (error.errcode, error.errmsg)) from None
        except (OSError, xmlrpc.client.ResponseError, http_client_errors()) as error:
            raise HttpFailure("%s: %s" % (type(error).__name__, error)) from None


def http_client_errors():
    import http.client

    return http.client.HTTPException


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class JsonRpc:
    """``/jsonrpc`` (service ``object``, ``execute_kw``): JSON carries control characters, NaN,
    huge integers and nested values that XML-RPC cannot."""

    transport = "JSON-RPC"

    def __init__(self, url, db, login, password, timeout=60):
        self.url, self.db, self.login, self.password = url, db, login, password
        self.timeout = timeout
        self.uid = self._rpc("common", "authenticate", [db, login, password, {}])
        if not self.uid:
            raise RuntimeError("cannot log in as %s" % login)

    def _rpc(self, service, method, args):
        body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1,
                           "params": {"service": service, "method": method, "args": args}})
        request = urllib.request.Request(self.url + "/jsonrpc", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise HttpFailure("HTTP %s" % error.code) from None
        except OSError as error:
            raise HttpFailure("%s: %s" % (type(error).__name__, error)) from None
        try:
            answer = json.loads(payload)
        except ValueError:
            raise HttpFailure("unparsable JSON answer: %r" % payload[:300]) from None
        if "error" in answer:
            data = answer["error"].get("data") or {}
            raise RpcError(self.transport, data.get("name"), data.get("message"), answer["error"])
        return answer.get("result")

    def call(self, model, method, *args, **kwargs):
        return self._rpc("object", "execute_kw",
                         [self.db, self.uid, self.password, model, method, list(args), kwargs])


# ---------------------------------------------------------------------------------------------
class OdooServer(odoo_server.OdooServer):
    """Odoo on one database, prefork (``workers``) or threaded (``workers=0``), with its own log
    file. ``cron_threads``: Odoo's max_cron_threads (cron workers in prefork); 0 runs no
    scheduled action, and no background call. ``name`` keeps the files of several servers on one
    database apart; it is also their PostgreSQL application_name (``<name>-<pid>``), which tells
    which process wrote a row."""

    def __init__(self, odoo_src, db, run_dir, workers=4, cron_threads=0, name="odoo"):
        self.workers = workers
        self.name = name
        self.log_path = os.path.join(run_dir, name + "-server.log")
        self.init_log_path = os.path.join(run_dir, name + "-init.log")
        port = free_port()
        conf = os.path.join(run_dir, name + "-faults.conf")
        data_dir = os.path.join(run_dir, "odoo-data")
        odoo_server.write_odoo_conf(conf, port, [
            "data_dir=" + data_dir, "db_name=" + db,
            "dbfilter=^%s$" % db, "gevent_port=%d" % free_port(),
            "max_cron_threads=%d" % cron_threads,
            "limit_time_real=120", "limit_time_cpu=60"])
        # The broker must come from the system parameter the tests set, not from a stray env.
        super().__init__(odoo_src, conf, db, port, data_dir=data_dir, env={
            "COMPUTE_BRIDGE_BROKER_URL": None, "ODOO_PGAPPNAME": name + "-{pid}"})

    def kill(self):
        """SIGKILL to the whole process group (master and workers): a crash, no cleanup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def create_db(self, timeout=420):
        self.drop_db()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.init_log_path)
        self.run("-i", "compute_bridge", "--log-level=warn", output=self.init_log_path,
                 timeout=timeout)

    def start(self, timeout=90):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)
        super().start("--logfile", self.log_path, "--log-level=info",
                      "--log-handler=odoo.addons.compute_bridge:DEBUG",
                      "--workers=%d" % self.workers, timeout=timeout)

    def version(self):
        body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}}).encode()
        request = urllib.request.Request(self.url + "/web/webclient/version_info", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read()).get("result")

    def log(self):
        with contextlib.suppress(FileNotFoundError), open(self.log_path, errors="replace") as h:
            return h.read()
        return ""

    def xmlrpc(self, login="admin", password="admin", timeout=60):
        return XmlRpc(self.url, self.db, login, password, timeout)

    def jsonrpc(self, login="admin", password="admin", timeout=60):
        return JsonRpc(self.url, self.db, login, password, timeout)


# ---------------------------------------------------------------------------------------------
def load_bridge_rpc():
    """compute_bridge/rpc (pure Python, relative imports only) as the package ``cb_rpc``, without
    importing the addon (which needs Odoo)."""
    import importlib.util

    if "cb_rpc" in sys.modules:
        return sys.modules["cb_rpc"]
    folder = os.path.join(REPO, "compute_bridge", "rpc")
    spec = importlib.util.spec_from_file_location(
        "cb_rpc", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cb_rpc"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
OPERATION = "compute.operation"
OPERATION_FIELDS = ["field_1", "field_2", "result", "state", "error_message"]


def create_operations(client, pairs):
    return client.call(OPERATION, "create", [{"field_1": a, "field_2": b} for a, b in pairs])


def read_operations(client, ids):
    rows = client.call(OPERATION, "read", list(ids), fields=OPERATION_FIELDS)
    by_id = {row["id"]: row for row in rows}
    return [by_id[i] for i in ids]


def click(client, ids):
    """The "Suma" button, as the web client calls it."""
    return client.call(OPERATION, "action_suma", list(ids))


def notification(action):
    """(type, message) of a display_notification action."""
    assert action["type"] == "ir.actions.client" and action["tag"] == "display_notification", \
        action
    return action["params"]["type"], action["params"]["message"]


def readable(text, broker=None):
    """What a person can read: not empty, no Python traceback, no broker password."""
    assert isinstance(text, str) and text.strip(), repr(text)
    assert "Traceback (most recent call last)" not in text, text
    if broker is not None:
        assert broker.password_token not in text, text
        assert urllib.parse.quote(broker.password, safe="") not in text, text
    return text

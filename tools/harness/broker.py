"""RabbitMQ: check a broker we are pointed at, or run a private node.

Everything of a broker compute_bridge needs is checked, not just an open port: that it speaks
AMQP, that its management API answers with the credentials of ``RABBIT_API_URI`` (nameko's test
fixtures, ``make bench`` and the fault tests use it), and that the API belongs to the node
listening on the AMQP port. A Debian ``rabbitmq-server`` starts on install without the management
plugin: found on the default port, it is left alone and a private node runs on free ports
instead; named explicitly by ``AMQP_URI``, the harness says in one line what to enable.
"""

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from .common import (
    LOCAL_HOSTS,
    RUN_DIR,
    HarnessError,
    is_root,
    log,
    port_open,
    wait_until,
)

DEFAULT_AMQP_PORT = 5672
DEFAULT_API_PORT = 15672
API_PORT_OFFSET = DEFAULT_API_PORT - DEFAULT_AMQP_PORT  # a private node's management API
# Where a private node looks for free ports when another program has its defaults: 100 above,
# then 200, ... up to 900 above.
PORT_SEARCH_STEP, PORT_SEARCH_SPAN = 100, 1000
RABBIT_BIN = "/usr/lib/rabbitmq/bin"
RABBIT_START_TIMEOUT = 120  # seconds; a cold node with the management plugin takes ~20 s
PROBE_TIMEOUT = 3
AMQP_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_METHOD_FRAME = 1  # a broker answers the protocol header with connection.start on channel 0
PRIVATE_PORTS = range(5780, 5990)  # where a private node goes when the AMQP_URI port is taken
ENABLE_MANAGEMENT = "rabbitmq-plugins enable rabbitmq_management"

# What check() finds at a broker address
READY = "ready"
ABSENT = "absent"  # nothing listens on the AMQP port
NOT_AMQP = "not-amqp"  # something listens, but does not answer the AMQP protocol header
NO_MANAGEMENT = "no-management"  # AMQP answers, the management API does not
API_REFUSED = "api-refused"  # the management API refuses RABBIT_API_URI's credentials
OTHER_NODE = "other-node"  # the management API answers for a node not listening on that port


def amqp_speaks(host, port, timeout=PROBE_TIMEOUT):
    """True when ``host:port`` answers AMQP 0-9-1's protocol header with a method frame."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(AMQP_PROTOCOL_HEADER)
            first = sock.recv(7)
    except OSError:
        return False
    return len(first) == 7 and first[0] == AMQP_METHOD_FRAME and first[1:3] == b"\x00\x00"


def api_request(api_uri, path, method="GET", body=None, timeout=PROBE_TIMEOUT):
    """One call to the management API at ``api_uri`` (credentials in the URI)."""
    parts = urllib.parse.urlsplit(api_uri)
    url = "%s://%s:%d/api/%s" % (parts.scheme or "http", parts.hostname or "localhost",
                                 parts.port or DEFAULT_API_PORT, path)
    credentials = "%s:%s" % (urllib.parse.unquote(parts.username or "guest"),
                             urllib.parse.unquote(parts.password or "guest"))
    request = urllib.request.Request(url, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def check(amqp_uri, api_uri):
    """What answers at ``amqp_uri`` and ``api_uri``: one of the constants above."""
    amqp = urllib.parse.urlsplit(amqp_uri)
    host, port = amqp.hostname or "localhost", amqp.port or DEFAULT_AMQP_PORT
    if not port_open(host, port):
        return ABSENT
    if not amqp_speaks(host, port):
        return NOT_AMQP
    try:
        overview = api_request(api_uri, "overview")
    except urllib.error.HTTPError as error:
        return API_REFUSED if error.code in (401, 403) else NO_MANAGEMENT
    except (urllib.error.URLError, OSError, ValueError):
        return NO_MANAGEMENT
    ports = {item.get("port") for item in (overview or {}).get("listeners", ())
             if item.get("protocol") == "amqp"}
    return READY if not ports or port in ports else OTHER_NODE


UNSET_AMQP_URI = "or unset AMQP_URI to let the harness run its own node"
PROBLEMS = {  # status -> (what is wrong, what to do)
    NOT_AMQP: ("something that is not an AMQP broker listens at %(where)s (AMQP_URI)",
               "point AMQP_URI at RabbitMQ, " + UNSET_AMQP_URI),
    NO_MANAGEMENT: ("the RabbitMQ broker at %(where)s (AMQP_URI) has no management API at "
                    "%(api)s (RABBIT_API_URI)",
                    "enable it with `" + ENABLE_MANAGEMENT + "`, " + UNSET_AMQP_URI),
    API_REFUSED: ("the RabbitMQ management API at %(api)s refuses the user %(user)r of "
                  "RABBIT_API_URI",
                  "give that user the management tag, or set RABBIT_API_URI to an "
                  "administrator's credentials"),
    OTHER_NODE: ("the RabbitMQ management API at %(api)s (RABBIT_API_URI) belongs to a node "
                 "that does not listen at %(where)s (AMQP_URI)",
                 "set RABBIT_API_URI to the management API of that broker"),
    ABSENT: ("nothing answers at %(where)s (AMQP_URI)", "start RabbitMQ there"),
}


def problem(status, amqp_uri, api_uri):
    amqp = urllib.parse.urlsplit(amqp_uri)
    api = urllib.parse.urlsplit(api_uri)
    return PROBLEMS[status][0] % {
        "where": "%s:%s" % (amqp.hostname, amqp.port or DEFAULT_AMQP_PORT),
        "api": "http://%s:%s/api/" % (api.hostname, api.port or DEFAULT_API_PORT),
        "user": api.username,
    }


def explain(status, amqp_uri, api_uri):
    """One line: what is wrong with the broker at ``amqp_uri`` and what to do."""
    return "%s: %s" % (problem(status, amqp_uri, api_uri), PROBLEMS[status][1])


def ports_for_nodes(names, amqp_ports):
    """AMQP ports for private nodes ``names`` (one each; each node's management API listens
    API_PORT_OFFSET above): ``amqp_ports``, else the first set PORT_SEARCH_STEP after them
    that the nodes may use (:func:`node_may_use`); None when there is none within
    PORT_SEARCH_SPAN."""
    for shift in range(0, PORT_SEARCH_SPAN, PORT_SEARCH_STEP):
        ports = tuple(port + shift for port in amqp_ports)
        if all(node_may_use(name, port, port + API_PORT_OFFSET)
               for name, port in zip(names, ports, strict=True)):
            return ports
    return None


def node_may_use(name, amqp_port, api_port):
    """Whether a private node ``name`` may listen on ``amqp_port`` and ``api_port``: nothing
    listens on its ports, or that node itself does, left over from an interrupted run (its
    start stops it first)."""
    node = RabbitNode(name, amqp_port, api_port)
    if node.leftover():
        return True
    return not any(port_open(node.host, port, timeout=0.2)
                   for port in (node.amqp_port, node.api_port, node.dist_port))


class RabbitNode:
    """A private RabbitMQ node: own node name, data folder, epmd port and listeners.

    ``name`` keeps several nodes apart (the fault tests run one beside the main one);
    ``plugins`` are the plugins it enables (the management API by default).
    """

    def __init__(self, name="main", amqp_port=DEFAULT_AMQP_PORT, api_port=DEFAULT_API_PORT,
                 host="127.0.0.1", plugins=("rabbitmq_management",)):
        self.name = name
        self.host = host
        self.amqp_port = int(amqp_port)
        self.api_port = int(api_port)
        self.plugins = tuple(plugins)
        self.base = os.path.join(RUN_DIR, "rabbitmq-" + name)
        # Distribution and epmd ports derived from the AMQP port, so two nodes never collide.
        self.dist_port = self.dist_port_for(self.amqp_port)
        self.epmd_port = self.epmd_port_for(self.amqp_port)
        self.nodename = "cb_%s_%d@localhost" % (name, self.amqp_port)

    @staticmethod
    def dist_port_for(amqp_port):
        return 20000 + amqp_port % 10000

    @staticmethod
    def epmd_port_for(amqp_port):
        return 30000 + amqp_port % 10000

    @property
    def amqp_uri(self):
        return "pyamqp://guest:guest@%s:%d" % (self.host, self.amqp_port)

    @property
    def api_uri(self):
        return "http://guest:guest@%s:%d" % (self.host, self.api_port)

    def env(self):
        env = dict(os.environ)
        env.update(
            HOME=self.base,  # the Erlang cookie lives in $HOME: keep it private too
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.base, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.base, "rabbitmq.conf"),
            RABBITMQ_PID_FILE=os.path.join(self.base, "pid"),
            RABBITMQ_USE_LONGNAME="false",
        )
        return env

    @staticmethod
    def ensure_installed():
        if os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")):
            return
        if not is_root() or not shutil.which("apt-get"):
            raise HarnessError(
                "RabbitMQ is not installed and no broker answers at AMQP_URI: install it "
                "(sudo apt-get install rabbitmq-server) or point AMQP_URI at a broker")
        log("installing rabbitmq-server with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
        # policy-rc.d answering 101 stops the package from starting the system-wide node:
        # we only want the binaries.
        policy = "/usr/sbin/policy-rc.d"
        had_policy = os.path.exists(policy)
        if not had_policy:
            with open(policy, "w") as handle:
                handle.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "rabbitmq-server"], check=True,
                           env=env)
        finally:
            if not had_policy:
                os.unlink(policy)

    def leftover(self):
        """Whether this node (the pid in its data folder, an Erlang VM of this node name) runs,
        left over from an interrupted run."""
        try:
            with open("/proc/%d/cmdline" % self.pid(), "rb") as handle:
                command = handle.read()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        return self.nodename.partition("@")[0].encode() in command

    def running(self):
        if not port_open(self.host, self.amqp_port):
            return False
        return not self.plugins or port_open(self.host, self.api_port)

    def start(self):
        self.ensure_installed()
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        with open(os.path.join(self.base, "enabled_plugins"), "w") as handle:
            handle.write("[%s].\n" % ",".join(self.plugins))
        settings = ["listeners.tcp.default = %s:%d" % (self.host, self.amqp_port),
                    # a throwaway node on a small disk must not block publishers
                    "disk_free_limit.absolute = 50MB"]
        if "rabbitmq_management" in self.plugins:
            settings += ["management.tcp.port = %d" % self.api_port,
                         "management.tcp.ip = %s" % self.host]
        with open(os.path.join(self.base, "rabbitmq.conf"), "w") as handle:
            handle.write("\n".join(settings) + "\n")
        log("starting private RabbitMQ node %s on amqp :%d%s", self.nodename, self.amqp_port,
            ", management :%d" % self.api_port if self.plugins else " (no plugins)")
        with open(os.path.join(self.base, "log", "stdout.log"), "ab") as out:
            server = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")],
                                      cwd=self.base, env=self.env(), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        self.wait(server)

    def ready(self, server=None):
        if server is not None and server.poll() is not None:
            raise HarnessError("RabbitMQ node %s exited at start; see %s/log"
                               % (self.nodename, self.base))
        if not self.plugins:
            return amqp_speaks(self.host, self.amqp_port)
        return check(self.amqp_uri, self.api_uri) == READY

    def wait(self, server=None):
        """Until the node is ready; ``server``: its rabbitmq-server process, if we started it."""
        try:
            wait_until(lambda: self.ready(server), RABBIT_START_TIMEOUT, interval=0.5,
                       what="RabbitMQ node %s" % self.nodename)
        except TimeoutError:
            raise HarnessError("RabbitMQ node %s did not start; see %s/log"
                               % (self.nodename, self.base)) from None
        log("RabbitMQ node %s is up", self.nodename)

    def ctl(self, *args, check=True, timeout=60):
        return subprocess.run(
            [os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(), cwd=self.base, check=check, timeout=timeout,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def pid(self):
        with open(os.path.join(self.base, "pid")) as handle:
            return int(handle.read().strip())

    def stop(self, kill_epmd=True):
        log("stopping RabbitMQ node %s", self.nodename)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", os.path.join(self.base, "pid"), check=False, timeout=60)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.pid(), 9)
        if kill_epmd:
            self.kill_epmd()

    def kill_epmd(self):
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def free_node_ports(host="127.0.0.1"):
    """(AMQP port, management port) for a private node, below the ephemeral range (an outgoing
    connection may take a port from there before the node binds it): the first AMQP port from
    PRIVATE_PORTS that is free with its management port (10000 above) and the distribution and
    epmd ports derived from it."""
    for amqp in PRIVATE_PORTS:
        ports = (amqp, amqp + DEFAULT_API_PORT - DEFAULT_AMQP_PORT,
                 RabbitNode.dist_port_for(amqp), RabbitNode.epmd_port_for(amqp))
        if not any(port_open(host, port) for port in ports):
            return ports[:2]
    raise HarnessError("no free ports for a private RabbitMQ node in %d-%d"
                       % (PRIVATE_PORTS[0], PRIVATE_PORTS[-1]))


def defaults(environ):
    """(AMQP URI, management API URI, whether AMQP_URI was given) from the environment. Without
    AMQP_URI: guest on localhost, port COMPUTE_BRIDGE_AMQP_PORT (5672), its API 10000 above."""
    port = int(environ.get("COMPUTE_BRIDGE_AMQP_PORT") or DEFAULT_AMQP_PORT)
    amqp_uri = environ.get("AMQP_URI") or "pyamqp://guest:guest@localhost:%d" % port
    api_uri = environ.get("RABBIT_API_URI") or "http://guest:guest@localhost:%d" % (
        port + DEFAULT_API_PORT - DEFAULT_AMQP_PORT)
    return amqp_uri, api_uri, bool(environ.get("AMQP_URI"))


# What up() does with what check() found
USE = "use"
START_THERE = "start-there"  # a private node on the AMQP_URI's port
START_ELSEWHERE = "start-elsewhere"  # a private node on free ports
REFUSE = "refuse"  # one line saying what is wrong, exit status 1


def decide(status, explicit, local):
    """What to do with a broker address where ``check()`` found ``status``: ``explicit`` when the
    user set AMQP_URI, ``local`` when its host is this machine."""
    if status == READY:
        return USE
    if status == ABSENT:
        return START_THERE if local else REFUSE
    return REFUSE if explicit else START_ELSEWHERE


def up(state, environ=os.environ):
    """Find or start the broker; record its URIs (and whether we own it) in ``state``."""
    amqp_uri, api_uri, explicit = defaults(environ)
    amqp, api = urllib.parse.urlsplit(amqp_uri), urllib.parse.urlsplit(api_uri)
    host, port = amqp.hostname or "localhost", amqp.port or DEFAULT_AMQP_PORT
    status = check(amqp_uri, api_uri)
    action = decide(status, explicit, host in LOCAL_HOSTS)
    if action == USE:
        log("using the broker at %s:%s (management API at %s:%s)", host, port, api.hostname,
            api.port or DEFAULT_API_PORT)
        state.update(AMQP_URI=amqp_uri, RABBIT_API_URI=api_uri)
        return
    if action == REFUSE:
        raise HarnessError(explain(status, amqp_uri, api_uri))
    if action == START_THERE:
        api_port = api.port or DEFAULT_API_PORT
        if port_open(host, api_port):  # taken by something else: the node's API goes elsewhere
            api_port = free_node_ports()[1]
        node = RabbitNode("main", port, api_port)
    else:
        log("%s: starting a private node on free ports", problem(status, amqp_uri, api_uri))
        node = RabbitNode("main", *free_node_ports())
    node.start()
    state.update(AMQP_URI=node.amqp_uri, RABBIT_API_URI=node.api_uri,
                 COMPUTE_BRIDGE_OWNS_BROKER=node.name)


def down(state):
    if state.get("COMPUTE_BRIDGE_OWNS_BROKER"):
        amqp = urllib.parse.urlsplit(state["AMQP_URI"])
        api = urllib.parse.urlsplit(state["RABBIT_API_URI"])
        RabbitNode(state["COMPUTE_BRIDGE_OWNS_BROKER"], amqp.port, api.port).stop()

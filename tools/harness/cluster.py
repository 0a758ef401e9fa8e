"""A private three-node RabbitMQ cluster on this machine, as a user runs one in production: one
virtual host whose default queue type is quorum, reached through kombu's failover URL form.

Each node is a :class:`.broker.RabbitNode` of its own (node name, ports, data folder under the run
directory); what makes them one cluster: the same Erlang cookie, one epmd port for all (Erlang
looks a peer up in the epmd at its own port) and ``rabbitmqctl join_cluster``. The tests kill,
stop, restart and rejoin single nodes (tests/faults/test_85_cluster.py); ``make bench`` runs a
cluster beside the single node.

The ports are named constants, overridable by the environment so that two runs on one machine
do not collide: ``COMPUTE_BRIDGE_CLUSTER_AMQP_PORTS`` (comma-separated, one per node; each
node's management API listens 10000 above) and ``COMPUTE_BRIDGE_CLUSTER_EPMD_PORT``.
"""

import contextlib
import os
import secrets
import shutil
import signal
import threading
import urllib.parse

from .broker import API_PORT_OFFSET, RabbitNode, api_request, ports_for_nodes
from .common import HarnessError, log, port_open, wait_until

CLUSTER_AMQP_PORTS = (5801, 5811, 5821)
CLUSTER_EPMD_PORT = 5829
CLUSTER_AMQP_PORTS_ENV = "COMPUTE_BRIDGE_CLUSTER_AMQP_PORTS"
CLUSTER_EPMD_PORT_ENV = "COMPUTE_BRIDGE_CLUSTER_EPMD_PORT"
CLUSTER_VHOST = "compute_bridge"
DEFAULT_QUEUE_TYPE = "quorum"
NODE_DOWN_TIMEOUT = 30  # seconds for a killed or stopped node's port to close
REJOIN_TIMEOUT = 120  # seconds for a restarted node to be back in the cluster


class ClusterNode(RabbitNode):
    """A node of :class:`RabbitCluster`: the cluster's cookie and epmd port."""

    def __init__(self, name, amqp_port, api_port, epmd_port, cookie):
        super().__init__(name, amqp_port, api_port)
        self.epmd_port = epmd_port
        self.cookie = cookie

    def start(self):
        os.makedirs(self.base, exist_ok=True)
        cookie_path = os.path.join(self.base, ".erlang.cookie")  # $HOME of the node
        with contextlib.suppress(FileNotFoundError):
            os.chmod(cookie_path, 0o600)
        with open(cookie_path, "w") as handle:
            handle.write(self.cookie)
        os.chmod(cookie_path, 0o400)  # Erlang refuses a cookie others may read
        super().start()

    def kill(self):
        """SIGKILL the node's Erlang VM: its connections drop without a close frame."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.pid(), signal.SIGKILL)
        wait_until(lambda: not port_open(self.host, self.amqp_port), NODE_DOWN_TIMEOUT,
                   what="%s down" % self.nodename)

    def stop_node(self):
        """A graceful stop (``rabbitmqctl stop``), as in a rolling restart."""
        self.stop(kill_epmd=False)
        wait_until(lambda: not port_open(self.host, self.amqp_port), NODE_DOWN_TIMEOUT,
                   what="%s down" % self.nodename)


def cluster_ports(environ=os.environ, name="cluster"):
    """(AMQP ports, epmd port) of the cluster, from the environment, else the defaults, else
    (another program listens on one of their ports) the first free set after them."""
    raw = environ.get(CLUSTER_AMQP_PORTS_ENV)
    epmd_port = int(environ.get(CLUSTER_EPMD_PORT_ENV) or CLUSTER_EPMD_PORT)
    if raw:
        return tuple(int(port) for port in raw.split(",")), epmd_port
    names = ["%s%d" % (name, number) for number in range(1, len(CLUSTER_AMQP_PORTS) + 1)]
    amqp_ports = ports_for_nodes(names, CLUSTER_AMQP_PORTS)
    if amqp_ports:
        return amqp_ports, epmd_port
    raise HarnessError("no free ports for a private RabbitMQ cluster from %d on; set %s"
                       % (CLUSTER_AMQP_PORTS[0], CLUSTER_AMQP_PORTS_ENV))


class RabbitCluster:
    """Three (or ``len(amqp_ports)``) private nodes joined into one cluster, with a virtual
    host :data:`CLUSTER_VHOST` whose default queue type is quorum and a user for the clients."""

    def __init__(self, name="cluster", amqp_ports=None, epmd_port=None, user="cb_cluster"):
        default_ports, default_epmd = cluster_ports(name=name) if not amqp_ports else ((), None)
        amqp_ports = amqp_ports or default_ports
        cookie = secrets.token_hex(16).upper()
        self.nodes = [
            ClusterNode("%s%d" % (name, number), port, port + API_PORT_OFFSET,
                        epmd_port or default_epmd or CLUSTER_EPMD_PORT, cookie)
            for number, port in enumerate(amqp_ports, start=1)
        ]
        self.user = user
        self.password = secrets.token_hex(12)
        self.vhost = CLUSTER_VHOST

    # -- lifecycle
    def start(self):
        """Wipe and start every node (in parallel: a cold node takes seconds), join them to
        the first, create the virtual host and the user."""
        for node in self.nodes:
            if node.leftover():  # from an interrupted run
                node.stop(kill_epmd=False)
            shutil.rmtree(node.base, ignore_errors=True)
        errors = []

        def start(node):
            try:
                node.start()
            except (HarnessError, OSError) as error:
                errors.append(error)

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.ctl("start_app")
        first.ctl("add_vhost", self.vhost, "--default-queue-type", DEFAULT_QUEUE_TYPE)
        first.ctl("add_user", self.user, self.password)
        first.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")
        first.ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.wait_members(len(self.nodes))
        log("RabbitMQ cluster of %d nodes up: %s", len(self.nodes),
            ", ".join(node.nodename for node in self.nodes))

    def shutdown(self):
        for node in self.nodes:
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError,
                                     TimeoutError, HarnessError):
                node.kill()
        self.nodes[0].kill_epmd()

    def restart(self, node):
        """Start a stopped or killed node again on its data: it rejoins the cluster."""
        node.start()
        self.wait_members(len(self.nodes))

    # -- addresses
    def url(self, order=None, user=None, password=None):
        """kombu's failover form ``url1;url2;...`` of the nodes, in ``order`` (node indexes)."""
        order = range(len(self.nodes)) if order is None else order
        credentials = "%s:%s" % (user or self.user, urllib.parse.quote(
            password or self.password, safe=""))
        return ";".join("pyamqp://%s@%s:%d/%s" % (credentials, self.nodes[i].host,
                                                   self.nodes[i].amqp_port, self.vhost)
                        for i in order)

    # -- management API (guest works from localhost), through the first live node
    def api(self, path):
        for node in self.nodes:
            if node.running():
                return api_request(node.api_uri, path, timeout=5)
        raise HarnessError("no node of the cluster is running")

    def running_members(self):
        return {row["name"] for row in self.api("nodes") if row.get("running")}

    def wait_members(self, count, timeout=REJOIN_TIMEOUT):
        wait_until(lambda: len(self.running_members()) >= count, timeout,
                   what="%d running cluster members" % count)

    def queues(self):
        """``{name: row}`` of the queues in the cluster's virtual host."""
        rows = self.api("queues/%s" % urllib.parse.quote(self.vhost, safe=""))
        return {row["name"]: row for row in rows}

    def node_of(self, row):
        """The :class:`ClusterNode` whose name a management row (connection, queue) gives."""
        return next(node for node in self.nodes if node.nodename == row.get("node"))

    def connections(self, user=None):
        rows = self.api("connections")
        return [row for row in rows
                if row.get("vhost") == self.vhost and (user is None or row.get("user") == user)]

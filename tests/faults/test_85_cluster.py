"""On a three-node RabbitMQ cluster (tools/harness/cluster.py), as a user runs one in production:
a virtual host whose default queue type is quorum, kombu's failover URL in Odoo's setting and in
`nameko run --broker`, two service instances given the nodes in different orders.

Nodes are killed (SIGKILL) under clicks and under a 1,000-record Suma, restarted, and restarted
one after the other under a trickle of clicks; two Odoo servers share the database.
"""

import contextlib
import os
import random
import threading
import time
import urllib.parse

import faults_harness as harness
import pytest
from conftest import RPC_TIMEOUT, set_bridge_params
from faults_harness import click, create_operations, read_operations

from tools.harness.cluster import RabbitCluster

pytestmark = pytest.mark.odoo

CLUSTER_RPC_TIMEOUT = 30  # seconds: a batch moved to another node must fit in it with room
SERVICE_DELAY = 0.02  # seconds per compute call: a 1,000-record Suma lasts about a second
CLICKERS = 5  # users clicking at once while a node is killed
CLICKS_AFTER_KILL = 4  # clicks each user makes once the node is gone: all must succeed
SUMA_BATCH = 1000
TRICKLE_PAUSE = 0.2  # seconds between two clicks of the rolling-restart trickle
CALLS = 10000
CALL_THREADS = 4  # connections the 10,000 calls go over, each with its reply queue
CALL_CHUNK = 250  # calls per call_many: what waits behind the others stays within the timeout
WAIT = 90  # seconds: the most a wait of this module may take


def consumer_ports(cluster, queue=harness.COMPUTE_QUEUE):
    rows = cluster.api("consumers/%s" % urllib.parse.quote(cluster.vhost, safe=""))
    return {row["channel_details"]["peer_port"] for row in rows
            if row["queue"]["name"] == queue}


def consuming(cluster, service):
    return bool(service.local_ports() & consumer_ports(cluster))


@pytest.fixture(scope="module")
def cluster(run_dir):
    nodes = RabbitCluster()
    started = time.monotonic()
    try:
        nodes.start()
        harness.measure("cluster: three nodes started and joined (s)",
                        round(time.monotonic() - started, 1))
        yield nodes
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def services(cluster, run_dir):
    """Two slow_services instances; A lists the nodes 1, 2, 3, B lists them 3, 2, 1."""
    started = []
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    try:
        for label, order in (("cluster-a", (0, 1, 2)), ("cluster-b", (2, 1, 0))):
            service = harness.ServiceProcess(
                label, ["--broker", cluster.url(order)], "slow_services", env=env,
                extra_env={"PYTHONPATH": os.path.dirname(os.path.abspath(__file__)),
                           "FAULTS_COMPUTE_DELAY": str(SERVICE_DELAY), "LOG_LEVEL": "INFO"},
                output=os.path.join(run_dir, label + ".log")).start()
            started.append(service)
        harness.wait_until(lambda: all(consuming(cluster, s) for s in started), WAIT,
                           what="both cluster instances consuming")
        yield started
    finally:
        for service in started:
            service.stop(harness.SERVICE_STOP_GRACE)


@pytest.fixture()
def on_cluster(odoo, broker, cluster, services):
    """Odoo's setting: the cluster's failover URL (nodes 1, 2, 3); the faults broker after."""
    admin = odoo.xmlrpc()
    set_bridge_params(admin, cluster.url(), CLUSTER_RPC_TIMEOUT)
    yield admin
    set_bridge_params(admin, broker.uri(), RPC_TIMEOUT)


@pytest.fixture()
def all_nodes_up(cluster):
    for node in cluster.nodes:
        if not node.running():
            cluster.restart(node)
    return cluster


class Clicker(threading.Thread):
    """One user pressing Suma on a new operation, again and again until told to stop (or
    ``clicks`` times), recording when each click started, how long it took and how it ended."""

    def __init__(self, server, pause=0.0, clicks=None):
        super().__init__(daemon=True)
        self.client = server.xmlrpc(timeout=CLUSTER_RPC_TIMEOUT * 2)
        self.pause, self.clicks = pause, clicks
        self.stopping = threading.Event()
        self.results = []  # (started, seconds, "done" / "wrong" / "failed: ...")

    def run(self):
        while not self.stopping.is_set() and (self.clicks is None
                                              or len(self.results) < self.clicks):
            a, b = random.randint(0, 10 ** 6), random.randint(0, 10 ** 6)
            started = time.monotonic()
            try:
                ids = create_operations(self.client, [(a, b)])
                click(self.client, ids)
                row = read_operations(self.client, ids)[0]
                if row["state"] != "done":
                    outcome = "failed: %s" % row["error_message"]
                else:
                    outcome = "done" if row["result"] == a + b else "wrong"
            except (harness.RpcError, harness.HttpFailure) as error:
                outcome = "failed: %s" % error
            self.results.append((started, time.monotonic() - started, outcome))
            self.stopping.wait(self.pause)

    def finish(self):
        if self.clicks is None:
            self.stopping.set()
        self.join(CLUSTER_RPC_TIMEOUT * 3)
        assert not self.is_alive(), "a click has not ended (a hang)"


def test_queue_types_on_a_quorum_virtual_host(cluster, services, on_cluster):
    """The services' RPC and event queues are replicated; reply queues never are."""
    connection_rpc = harness.load_bridge_rpc()
    config = connection_rpc.BridgeConfig(cluster.url(), CLUSTER_RPC_TIMEOUT, False)
    assert connection_rpc.call(config, "compute", "method", 2, 3) == 5  # a pooled reply queue
    queues = cluster.queues()
    connection_rpc.close_pool()
    assert queues[harness.COMPUTE_QUEUE]["type"] == "quorum"
    assert {row["type"] for name, row in queues.items() if name.startswith("evt-")} == {"quorum"}
    replies = {name: row["type"] for name, row in queues.items()
               if name.startswith("rpc.reply-")}
    assert any(name.startswith("rpc.reply-compute_bridge-") for name in replies), replies
    assert set(replies.values()) == {"classic"}, replies


def leader_first(cluster, queue=harness.COMPUTE_QUEUE):
    """(index of the node leading quorum queue ``queue``, node order starting with it): the
    hardest node to lose, as the queue refuses requests until another leader is elected."""
    row = cluster.queues()[queue]
    leader = cluster.nodes.index(cluster.node_of({"node": row.get("leader") or row["node"]}))
    count = len(cluster.nodes)
    return leader, tuple((leader + shift) % count for shift in range(count))


def test_kill_odoo_node_during_clicks(odoo, all_nodes_up, services, on_cluster):
    """SIGKILL of the node Odoo is connected to, which also leads rpc-compute, while users
    click: no click hangs or gets a wrong result, and every click after the kill succeeds (on
    another node)."""
    cluster = all_nodes_up
    leader, order = leader_first(cluster)
    set_bridge_params(on_cluster, cluster.url(order), CLUSTER_RPC_TIMEOUT)
    clickers = [Clicker(odoo) for _i in range(CLICKERS)]
    for clicker in clickers:
        clicker.start()
    harness.wait_until(lambda: all(len(c.results) >= 2 for c in clickers), WAIT,
                       what="the users clicking")
    killed_at = time.monotonic()
    cluster.nodes[leader].kill()
    harness.wait_until(
        lambda: all(sum(r[0] > killed_at for r in c.results) >= CLICKS_AFTER_KILL
                    for c in clickers), WAIT, what="clicks after the kill")
    for clicker in clickers:
        clicker.finish()
    results = [r for c in clickers for r in c.results]
    assert not [r for r in results if r[2] == "wrong"]
    after = [r for r in results if r[0] > killed_at]
    assert [r[2] for r in after] == ["done"] * len(after)
    around = [r[1] for r in results if r[0] <= killed_at <= r[0] + r[1]]
    harness.measure("cluster: clicks while Odoo's node was SIGKILLed (done/all)", "%d/%d" % (
        sum(r[2] == "done" for r in results), len(results)))
    harness.measure("cluster: longest click across the kill (s)",
                    round(max(around, default=0.0), 2))


def test_killed_node_rejoins(cluster, services):
    """The killed node, started again on its data, is back in the cluster and in the quorum
    queue's members."""
    node = next((n for n in cluster.nodes if not n.running()), cluster.nodes[0])
    if node.running():
        node.kill()
    started = time.monotonic()
    cluster.restart(node)
    harness.wait_until(
        lambda: node.nodename in cluster.queues()[harness.COMPUTE_QUEUE].get("online", []),
        WAIT, what="%s back among rpc-compute's online members" % node.nodename)
    harness.measure("cluster: killed node back in the cluster and the quorum (s)",
                    round(time.monotonic() - started, 1))


def test_kill_odoo_node_during_a_1000_record_suma(odoo, all_nodes_up, services, on_cluster):
    """SIGKILL of Odoo's node, which also leads rpc-compute, in the middle of a 1,000-record
    Suma: the calls whose replies were lost are sent again on a connection to a live node
    (refused until a new leader is elected, then taken), and all 1,000 end done and right.
    The service instances connected to the dead node consume again from another one."""
    cluster = all_nodes_up
    leader, order = leader_first(cluster)
    set_bridge_params(on_cluster, cluster.url(order), CLUSTER_RPC_TIMEOUT)
    pairs = [(i, 2 * i) for i in range(SUMA_BATCH)]
    ops = create_operations(on_cluster, pairs)
    log_before = len(odoo.log())
    box = {}

    def press():
        started = time.monotonic()
        box["action"] = click(odoo.xmlrpc(timeout=CLUSTER_RPC_TIMEOUT * 2), ops)
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=press, daemon=True)
    computed = sum(s.computed() for s in services)
    thread.start()
    harness.wait_until(lambda: sum(s.computed() for s in services) >= computed + 100, WAIT,
                       interval=0.02, what="the Suma under way")
    cluster.nodes[leader].kill()
    thread.join(CLUSTER_RPC_TIMEOUT * 2)
    assert not thread.is_alive(), "the Suma has not ended"
    rows = read_operations(on_cluster, ops)
    assert [row["state"] for row in rows] == ["done"] * SUMA_BATCH
    assert [row["result"] for row in rows] == [a + b for a, b in pairs]
    resent = odoo.log()[log_before:].count("on a new connection")
    assert resent >= 1, "the kill did not strike mid-batch"
    harness.wait_until(lambda: all(consuming(cluster, s) for s in services), WAIT,
                       interval=0.2, what="every instance consuming with the node still down")
    for service in services:  # nameko logs the failover URL it could not reach
        assert cluster.password not in service.log()
    harness.measure("cluster: 1,000-record Suma across a SIGKILL of Odoo's node (s)",
                    round(box["elapsed"], 2))


def test_service_whose_node_died_takes_work_again(all_nodes_up, services):
    """Instance B lists node 3 first; node 3 dies: B reconnects to another node and computes."""
    cluster = all_nodes_up
    victim = services[1]
    assert consuming(cluster, victim)
    killed_at = time.monotonic()
    cluster.nodes[2].kill()
    harness.wait_until(lambda: consuming(cluster, victim), WAIT, interval=0.2,
                       what="instance B consuming from another node")
    harness.measure("cluster: service instance consuming again after its node died (s)",
                    round(time.monotonic() - killed_at, 1))
    services[0].stop(harness.SERVICE_STOP_GRACE)  # B alone: the calls must reach it
    try:
        connection_rpc = harness.load_bridge_rpc()
        config = connection_rpc.BridgeConfig(cluster.url((0, 1)), CLUSTER_RPC_TIMEOUT, False)
        before = victim.computed()
        outcomes = connection_rpc.call_many(config, "compute", "method",
                                            [(i, 1) for i in range(50)])
        connection_rpc.close_pool()
        assert [o.value for o in outcomes] == [i + 1 for i in range(50)]
        assert victim.computed() >= before + 50
    finally:
        services[0].start()
        harness.wait_until(lambda: consuming(cluster, services[0]), WAIT,
                           what="instance A consuming again")


def test_rolling_restart_under_a_trickle_of_clicks(odoo, all_nodes_up, services, on_cluster):
    """Each node stopped and started again in turn while a user clicks: no click fails."""
    cluster = all_nodes_up
    clicker = Clicker(odoo, pause=TRICKLE_PAUSE)
    clicker.start()
    started = time.monotonic()
    try:
        for node in cluster.nodes:
            node.stop_node()
            cluster.restart(node)
    finally:
        clicker.finish()
    outcomes = [r[2] for r in clicker.results]
    assert outcomes and outcomes == ["done"] * len(outcomes)
    harness.measure("cluster: rolling restart of 3 nodes (s), clicks done/all", "%.0f, %d/%d" % (
        time.monotonic() - started, outcomes.count("done"), len(outcomes)))
    harness.measure("cluster: longest click during the rolling restart (s)",
                    round(max(r[1] for r in clicker.results), 2))


def test_two_odoo_servers_and_two_service_instances_share_the_work(
        odoo, all_nodes_up, services, on_cluster, run_dir):
    """A second Odoo server process on the same database, and the two service instances (each
    with its own node order): clicks through both servers all succeed, both instances compute."""
    second_dir = os.path.join(run_dir, "cluster-odoo2")
    os.makedirs(second_dir, exist_ok=True)
    second = harness.OdooServer(odoo.odoo_src, odoo.db, second_dir, workers=0)
    second.start()
    try:
        before = [s.computed() for s in services]
        clickers = [Clicker(server, clicks=10) for server in (odoo, second, odoo, second)]
        for clicker in clickers:
            clicker.start()
        for clicker in clickers:
            clicker.finish()
        outcomes = [r[2] for c in clickers for r in c.results]
        assert outcomes == ["done"] * 40
        shares = [s.computed() - b for s, b in zip(services, before, strict=True)]
        assert all(share > 0 for share in shares), shares
        harness.measure("cluster: 40 clicks via 2 Odoo servers, calls per service instance",
                        shares)
    finally:
        second.stop()


def test_10000_calls_leave_no_queues_behind(all_nodes_up, services):
    """10,000 calls over four connections: once they are closed, no queue of theirs is left."""
    cluster = all_nodes_up
    connection_rpc = harness.load_bridge_rpc()
    config = connection_rpc.BridgeConfig(cluster.url(), CLUSTER_RPC_TIMEOUT, False)
    before = set(cluster.queues())
    errors = []
    per_thread = CALLS // CALL_THREADS

    def calls(first):
        try:
            for start in range(first, first + per_thread, CALL_CHUNK):
                outcomes = connection_rpc.call_many(
                    config, "compute", "method", [(i, 0) for i in range(start, start + CALL_CHUNK)])
                errors.extend(o.error for o in outcomes if o.error is not None)
        except connection_rpc.BridgeError as error:
            errors.append(error)

    threads = [threading.Thread(target=calls, args=(n * per_thread,))
               for n in range(CALL_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLUSTER_RPC_TIMEOUT * 4)
    assert not errors, errors[:3]
    during = set(cluster.queues())
    connection_rpc.close_pool()
    with contextlib.suppress(TimeoutError):
        harness.wait_until(lambda: set(cluster.queues()) <= before, 10,
                           what="the reply queues deleted")
    left = set(cluster.queues()) - before
    assert not left, sorted(left)
    harness.measure("cluster: reply queues during 10,000 calls / left after",
                    "%d / %d" % (len(during - before), len(left)))


MINORITY_RPC_TIMEOUT = 5  # seconds: a call into a queue without its quorum waits it out


def test_minority_left_calls_fail_saying_the_broker_did_not_accept(odoo, all_nodes_up, services,
                                                                  on_cluster):
    """Two nodes of three killed: rpc-compute has lost its quorum and accepts nothing. A click
    ends after the RPC timeout, saying that the broker did not accept the requests (never
    confirmed), not that the service is busy; once a second node is back, clicks work."""
    cluster = all_nodes_up
    set_bridge_params(on_cluster, cluster.url((0, 1, 2)), MINORITY_RPC_TIMEOUT)
    try:
        for node in cluster.nodes[1:]:
            node.kill()
        [op] = create_operations(on_cluster, [(20, 22)])
        click(odoo.xmlrpc(timeout=MINORITY_RPC_TIMEOUT * 4), [op])
        [row] = read_operations(on_cluster, [op])
        assert row["state"] == "failed", row
        assert "did not accept the requests" in row["error_message"], row["error_message"]
        assert cluster.password not in row["error_message"]
        cluster.nodes[1].start()  # a quorum again: two of three
        cluster.wait_members(2)
        harness.wait_until(lambda: (click(on_cluster, [op]) or True)
                           and read_operations(on_cluster, [op])[0]["state"] == "done",
                           WAIT, interval=1, what="a click done with two nodes back")
    finally:
        set_bridge_params(on_cluster, cluster.url(), CLUSTER_RPC_TIMEOUT)

"""`make bench`: what a call costs, measured side by side in one run.

Run by tools/bench.sh once the broker and PostgreSQL answer (AMQP_URI, RABBIT_API_URI, PG*,
ODOO_SRC in the environment). This script starts and stops everything else itself: the Nameko
services (`nameko run`, one or two instances) and an Odoo HTTP server on a benchmark database with
compute_bridge and benchmarks/addons/compute_bridge_bench installed.

Everything runs in a private RabbitMQ virtual host (deleted at the end), so services started by
other people on the same broker neither take our calls nor add to our queue count.

Phases (each prints median and p90 per variant, N, and the ratios between variants):

1. one call in process: a new ClusterRpcProxy per call (the blog post's way) vs the addon's pooled
   client (compute_bridge/rpc, imported by file path, without Odoo) vs a raw persistent proxy;
2. one click over XML-RPC on a real Odoo server: the blog post's way (compute_bridge_bench's
   action_suma_blog) vs ours (action_suma on one record) vs a no-op read;
3. 1,000 records in one action_suma vs 1,000 raw pipelined call_async on a persistent proxy;
5. the Odoo server's RSS and the broker's queue count before and after 10,000 calls;
6. background calls: the "Suma in background" click (action_suma_queue) vs Odoo's own no-op
   write over XML-RPC, then 10,000 queued calls drained by the server's cron thread vs 10,000 raw
   pipelined call_async to the same services;
7. what metrics and tracing cost per call, on against off, each variant calling a fresh
   `nameko run` of its own (in a vhost of its own; off: COMPUTE_BRIDGE_METRICS=0 and
   COMPUTE_BRIDGE_TRACING=0): a bare call in process (the pooled client with the Odoo side's
   observer, prometheus-client and an OpenTelemetry request span and call span, vs no
   observer), then one click over XML-RPC on two Odoo servers on the benchmark database, one
   started with both switches off;
8. one click and a 1,000-record action_suma on a private three-node RabbitMQ cluster (quorum
   queues, tools/harness/cluster.py), through a second Odoo server on the same database, beside
   the same on the single node: what replication costs, as a ratio;
4. services throughput with 1 and 2 `nameko run` instances (last: it needs the CPU to itself).

Numbers are for comparison within one run; nothing here asserts on time.
"""

import argparse
import concurrent.futures
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import warnings
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    RabbitAdmin,
    Report,
    children_rss_kib,
    cpu_seconds,
    interleaved,
    listening_pid,
    log,
    tcp_connections_to,
    vhost_uri,
)
from tools.harness.common import REPO, wait_until  # noqa: E402
from tools.harness.nameko_run import NamekoRun  # noqa: E402
from tools.harness.odoo_server import OdooServer, write_odoo_conf  # noqa: E402

# nameko 2.14 imports eventlet, which warns about its own deprecation on import: noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

RUN_DIR = os.environ.get("COMPUTE_BRIDGE_RUN_DIR") or os.path.join(REPO, ".run")
BENCH_DIR = os.path.join(RUN_DIR, "bench")
RESULTS = os.path.join(REPO, "benchmarks", "results", "latest.txt")

# Targets, from the issue.
TARGET_CLICK_SPEEDUP = 2.5  # blog-post click / our click (3x is the aim)
TARGET_CLICK_AIM = 3.0
TARGET_INPROC_OVERHEAD = 1.2  # pooled call / raw persistent call, at most
TARGET_BATCH_RATIO = 0.9  # raw pipelined time / batch time, at least
TARGET_THROUGHPUT = 1000.0  # calls/s with 2 instances, at least
TARGET_QUEUE_CLICK = 1.2  # queue click / Odoo's no-op write, at most
TARGET_DRAIN_RATIO = 0.8  # background drain rate / raw pipelined rate, at least
DRAIN_TIMEOUT = 900  # seconds for the cron thread to drain the background calls
DRAIN_POLL = 0.25  # seconds between two counts of the calls left
ODOO_DEFAULT_CRON_THREADS = 2  # Odoo's max_cron_threads default: what a plain server runs
QUEUE_CHUNK = 1000  # records created and queued per XML-RPC request
TARGET_TELEMETRY_RATIO = 1.05  # a call with metrics and tracing / one without, at most
RSS_TOLERANCE_KIB = 8 * 1024  # RSS may wobble this much (allocator arenas) without a leak

# Sizes. --quick divides most of them, for trying the harness out.
SIZES = {
    "inproc_rounds": 10, "inproc_per_round": 30,
    "click_rounds": 10, "click_per_round": 10,
    "batch_records": 1000, "batch_reps": 3,
    "soak_calls": 10000, "soak_click_share": 0.2, "soak_threads": 4,
    "throughput_calls": 4000, "throughput_clients": 2, "throughput_window": 40,
    "queue_rounds": 10, "queue_per_round": 10, "drain_calls": 10000,
    "telemetry_rounds": 20, "telemetry_per_round": 100,
    "telemetry_click_rounds": 10, "telemetry_click_per_round": 20,
    "cluster_batch_records": 1000,
}

VHOST = os.environ.get("BENCH_VHOST", "compute_bridge_bench")
ODOO_PHASES = frozenset("23568")  # the phases run on the main Odoo server (it prepares the db)
DB = os.environ.get("BENCH_DB", "cb_bench")
ODOO_PORT = int(os.environ.get("BENCH_ODOO_PORT", "8269"))
# Where `nameko run services` is run from: the repository (default) or another checkout.
SERVICES_ROOT = os.environ.get("BENCH_SERVICES_ROOT", REPO)
SERVICES_WEB_PORT = int(os.environ.get("BENCH_SERVICES_WEB_PORT", "18100"))
TELEMETRY_PORT_OFFSET = 10  # phase 7's instances' /health ports, after the others'
TELEMETRY_ODOO_PORT = ODOO_PORT + 20  # phase 7's two servers: this one and 10 above
CLUSTER_ODOO_PORT = int(os.environ.get("BENCH_CLUSTER_ODOO_PORT", str(ODOO_PORT + 10)))
CLUSTER_SERVICES_WEB_PORT = SERVICES_WEB_PORT + 9
START_TIMEOUT = 120  # seconds for a `nameko run` to consume


# ---------------------------------------------------------------------------------------------
# the pieces this script runs
# ---------------------------------------------------------------------------------------------

class Services:
    """`nameko run` instances of the services, as the README runs them, on our vhost."""

    def __init__(self, amqp_uri, admin):
        self.amqp_uri = amqp_uri
        self.admin = admin
        self.runs = []

    @property
    def procs(self):
        return [run.proc for run in self.runs]

    def args(self):
        config = os.path.join(SERVICES_ROOT, "services", "config.yaml")
        return ["--config", config] if os.path.exists(config) else ["--broker", self.amqp_uri]

    def start(self, count):
        if not self.runs and self.admin.consumers(VHOST, "rpc-compute"):
            raise SystemExit("something else already consumes rpc-compute in vhost %r: stop it "
                             "(or set BENCH_VHOST) so that it does not take our calls" % VHOST)
        while len(self.runs) < count:
            index = len(self.runs)
            run = NamekoRun(self.args(), cwd=SERVICES_ROOT, extra_env={
                "AMQP_URI": self.amqp_uri, "HEARTBEAT_URL": "",
                "WEB_SERVER_ADDRESS": "127.0.0.1:%d" % (SERVICES_WEB_PORT + index)},
                output=os.path.join(BENCH_DIR, "services-%d.log" % index)).start()
            self.runs.append(run)
            try:
                wait_until(lambda run=run, index=index: not run.alive or self.admin.consumers(
                    VHOST, "rpc-compute") > index, START_TIMEOUT,
                    what="services consuming rpc-compute")
            except TimeoutError as error:
                raise SystemExit(str(error)) from None
            if not run.alive:
                raise SystemExit("nameko run exited with %s; see %s"
                                 % (run.proc.returncode, run.output))
        log("%d services instance(s) consuming rpc-compute", count)

    def stop_extra(self, keep):
        while len(self.runs) > keep:
            self.runs.pop().stop()

    def stop(self):
        self.stop_extra(0)


class BenchOdoo(OdooServer):
    """An Odoo HTTP server (threaded, workers=0) on the benchmark database, with
    compute_bridge_bench on its addons path."""

    def __init__(self, odoo_src, amqp_uri, port=ODOO_PORT, name="odoo-bench", extra_env=None):
        conf = os.path.join(BENCH_DIR, name + ".conf")
        data_dir = os.path.join(BENCH_DIR, "odoo-data")
        write_odoo_conf(conf, port, [
            "addons_path=%s,%s" % (REPO, os.path.join(REPO, "benchmarks", "addons")),
            "data_dir=" + data_dir,
            # db_name alone restricts the server to this database. Adding a dbfilter would make
            # every session-less request (XML-RPC) list the databases on PostgreSQL
            # (Request._get_session_and_dbname -> db_list(force=True)): +1 query per call.
            "db_name=" + DB, "gevent_port=%d" % (port + 3), "workers=0",
            "max_cron_threads=0"])
        super().__init__(odoo_src, conf, DB, port,
                         output=os.path.join(BENCH_DIR, name + "-server.log"),
                         env=dict(extra_env or {}, COMPUTE_BRIDGE_BROKER_URL=amqp_uri),
                         data_dir=data_dir)
        self.amqp_uri = amqp_uri

    def start_with_cron(self):
        """The same server with Odoo's default cron threads: they run the background calls."""
        self.start("--max-cron-threads=%d" % ODOO_DEFAULT_CRON_THREADS)

    def prepare(self, fresh=False):
        """Create the benchmark database (or update its modules), in a process of its own, so
        the server measured later starts clean."""
        if fresh:
            self.drop_db()
        init_log = os.path.join(BENCH_DIR, "odoo-init.log")
        if self.db_exists():
            log("updating compute_bridge and compute_bridge_bench in database %s", DB)
            self.run("-u", "compute_bridge,compute_bridge_bench", output=init_log)
        else:
            log("creating database %s with compute_bridge_bench (a minute or two)", DB)
            self.run("-i", "compute_bridge_bench", output=init_log)


class OdooClient:
    """XML-RPC as an external client (or the web client's RPC) would make it; one HTTP
    connection kept alive per client, so each variant pays the same transport."""

    def __init__(self, url, login="admin", password="admin"):
        self.url = url
        self.password = password
        self.uid = xmlrpc.client.ServerProxy(url + "/xmlrpc/2/common").authenticate(
            DB, login, password, {})
        if not self.uid:
            raise SystemExit("cannot log in to %s as %s" % (DB, login))
        self.models = xmlrpc.client.ServerProxy(url + "/xmlrpc/2/object", allow_none=True)

    def execute(self, model, method, *args, **kwargs):
        return self.models.execute_kw(DB, self.uid, self.password, model, method, list(args),
                                      kwargs)

    def fork(self):
        return OdooClient.__new__(OdooClient)._copy(self)

    def _copy(self, other):
        self.url, self.password, self.uid = other.url, other.password, other.uid
        self.models = xmlrpc.client.ServerProxy(self.url + "/xmlrpc/2/object", allow_none=True)
        return self


def load_pooled_client():
    """compute_bridge/rpc as a package, by file path: it imports no ORM, so Odoo is not needed."""
    path = os.path.join(REPO, "compute_bridge", "rpc", "__init__.py")
    if not os.path.exists(path):
        return None
    name = "compute_bridge_rpc_bench"
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[os.path.dirname(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------

def phase_inproc(report, amqp_uri, raw, sizes, results):
    from nameko.standalone.rpc import ClusterRpcProxy

    report.header("(1) one call in process  (compute.method(99999, 99999); services: 1 instance)")
    config = {"AMQP_URI": amqp_uri}

    def per_call():
        with ClusterRpcProxy(config, timeout=10) as rpc:
            assert rpc.compute.method(99999, 99999) == 199998

    def raw_call():
        assert raw.compute.method(99999, 99999) == 199998

    variants = [("per-call ClusterRpcProxy (blog post)", per_call)]
    rpc = load_pooled_client()
    if rpc is not None:
        bridge_config = rpc.BridgeConfig(amqp_uri, 10.0, True)

        def pooled():
            assert rpc.call(bridge_config, "compute", "method", 99999, 99999) == 199998

        variants.append(("pooled (compute_bridge/rpc call())", pooled))
    else:
        report.line("  (compute_bridge/rpc not found: pooled variant skipped)")
    variants.append(("raw persistent ClusterRpcProxy", raw_call))

    for _ in range(20):  # warm-up: imports, kombu's producer pool, the pool's first proxy
        for _name, operation in variants:
            operation()
    admin = RabbitAdmin(os.environ.get("RABBIT_API_URI", "http://guest:guest@localhost:15672"))
    queues_before = len(admin.queues(VHOST))
    samples = interleaved(variants, sizes["inproc_rounds"], sizes["inproc_per_round"])
    time.sleep(1.0)
    left = len(admin.queues(VHOST)) - queues_before
    med = {name: report.timing(name, values) for name, values in samples.items()}
    raw_med = med["raw persistent ClusterRpcProxy"]
    per_med = med["per-call ClusterRpcProxy (blog post)"]
    report.ratio("per-call / raw persistent", per_med / raw_med)
    report.line("  reply queues left on the broker by these %d calls: %+d (per-call proxies: "
                "nameko declares them with x-expires 5 min, not auto-delete)"
                % (sum(len(v) for v in samples.values()), left))
    results["inproc_raw_ms"] = raw_med
    results["inproc_per_call_ms"] = per_med
    if rpc is not None:
        pooled_med = med["pooled (compute_bridge/rpc call())"]
        report.ratio("per-call / pooled", per_med / pooled_med)
        report.ratio("pooled / raw persistent", pooled_med / raw_med)
        results["inproc_pooled_ratio"] = pooled_med / raw_med


def load_bridge_telemetry():
    """compute_bridge/telemetry.py without Odoo: the addon's folder as a package whose
    __init__ (which imports Odoo) is not run; the metrics go to a folder of ours."""
    import types

    folder = os.path.join(REPO, "compute_bridge")
    package = types.ModuleType("compute_bridge_bench_addon")
    package.__path__ = [folder]
    sys.modules[package.__name__] = package
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(BENCH_DIR, "metrics")
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return importlib.import_module(package.__name__ + ".telemetry")


TELEMETRY_OFF_ENV = {"COMPUTE_BRIDGE_METRICS": "0", "COMPUTE_BRIDGE_TRACING": "0"}


def phase_telemetry(report, amqp_root, admin, sizes, results, odoo_db_ready):
    """Metrics and tracing on against off, each variant with processes of its own started for
    this phase (a long-running process and a fresh one differ by a few percent on their own):
    a bare call in process, then, with Odoo, a click on two Odoo servers alike but for the
    switches."""
    report.header("(7) metrics and tracing, per call  (compute.method; services: 1 fresh "
                  "instance each, in a vhost each)")
    started = []
    try:
        uris = {}
        for index, (variant, env) in enumerate((("on", {}), ("off", TELEMETRY_OFF_ENV))):
            vhost = "%s_telemetry_%s" % (VHOST, variant)
            admin.create_vhost(vhost)
            uris[variant] = vhost_uri(amqp_root, vhost)
            port = SERVICES_WEB_PORT + TELEMETRY_PORT_OFFSET + index
            started.append(("vhost", vhost))
            started.append(("process", NamekoRun(
                ["--broker", uris[variant]], cwd=SERVICES_ROOT,
                extra_env=dict(env, HEARTBEAT_URL="", WEB_SERVER_ADDRESS="127.0.0.1:%d" % port),
                output=os.path.join(BENCH_DIR, "services-telemetry-%s.log" % variant)).start()))
        for variant in uris:
            vhost = "%s_telemetry_%s" % (VHOST, variant)
            wait_until(lambda vhost=vhost: admin.consumers(vhost, "rpc-compute"), START_TIMEOUT,
                       what="services (telemetry %s) consuming rpc-compute" % variant)
        telemetry_bare_call(report, uris, sizes, results)
        odoo_src = os.environ.get("ODOO_SRC", "")
        if odoo_src:
            telemetry_click(report, odoo_src, uris, sizes, results, odoo_db_ready, started)
        else:
            report.line("  !!! no Odoo 18.0 source (ODOO_SRC): the click on and off skipped")
    finally:
        for kind, item in reversed(started):
            if kind == "process":
                item.stop()
            else:
                try:
                    admin.delete_vhost(item)
                except OSError as error:
                    log("could not delete vhost %s: %s", item, error)


def telemetry_bare_call(report, uris, sizes, results):
    """The pooled client with the Odoo side's observer and a request span around each call,
    against the client without an observer: the worst case, nothing else in the request."""
    telemetry = load_bridge_telemetry()
    rpc = sys.modules[telemetry.__package__ + ".rpc"]  # the client it observes
    telemetry.setup()
    observer = rpc.telemetry.observer()
    on_config = rpc.BridgeConfig(uris["on"], 10.0, True)
    off_config = rpc.BridgeConfig(uris["off"], 10.0, True)

    def on():
        rpc.telemetry.set_observer(observer)
        with telemetry.request_span("POST /bench", {}):
            assert rpc.call(on_config, "compute", "method", 99999, 99999) == 199998

    def off():
        rpc.telemetry.set_observer(None)
        assert rpc.call(off_config, "compute", "method", 99999, 99999) == 199998

    def services_only():
        rpc.telemetry.set_observer(None)
        assert rpc.call(on_config, "compute", "method", 99999, 99999) == 199998

    variants = [("bare call, on", on), ("bare call, off", off),
                ("bare call, on in the services only", services_only)]
    try:
        for _ in range(50):  # warm-up: connections, the metrics' files, the first spans
            for _name, operation in variants:
                operation()
        samples = interleaved(variants, sizes["telemetry_rounds"],
                              sizes["telemetry_per_round"])
    finally:
        rpc.telemetry.set_observer(None)
    med = {name: report.timing(name, values) for name, values in samples.items()}
    ratio = med["bare call, on"] / med["bare call, off"]
    report.ratio("bare call: on / off", ratio)
    report.ratio("bare call: services only / off",
                 med["bare call, on in the services only"] / med["bare call, off"])
    results["telemetry_ratio"] = ratio


def telemetry_click(report, odoo_src, uris, sizes, results, odoo_db_ready, started):
    """One click (action_suma on one record over XML-RPC) on an Odoo server with metrics and
    tracing against one started with both switched off, each calling its own services."""
    servers = {}
    for index, variant in enumerate(("on", "off")):
        server = BenchOdoo(odoo_src, uris[variant], port=TELEMETRY_ODOO_PORT + 10 * index,
                           name="odoo-telemetry-%s" % variant,
                           extra_env=TELEMETRY_OFF_ENV if variant == "off" else None)
        if index == 0 and not odoo_db_ready:
            server.prepare()
        started.append(("process", server))
        server.start()
        servers[variant] = server
    variants = []
    for variant, server in servers.items():
        client = OdooClient(server.url)
        op_id = client.execute("compute.operation", "create",
                               [{"field_1": 99999, "field_2": 99999}])[0]
        variants.append(("click, %s" % variant, lambda client=client, op_id=op_id: client.execute(
            "compute.operation", "action_suma", [op_id])))
        variants[-1][1]()
        row = client.execute("compute.operation", "read", [op_id], fields=["state", "result"])[0]
        if row["state"] != "done" or row["result"] != 199998:
            raise SystemExit("action_suma with telemetry %s did not compute: %r" % (variant, row))
    for _ in range(10):  # warm-up
        for _name, operation in variants:
            operation()
    med = [report.timing(name, values) for name, values in interleaved(
        variants, sizes["telemetry_click_rounds"], sizes["telemetry_click_per_round"]).items()]
    report.ratio("click: on / off", med[0] / med[1])
    results["telemetry_click_ratio"] = med[0] / med[1]


def phase_click(report, client, sizes, results):
    report.header("(2) one click over XML-RPC on a real Odoo server (threaded, workers=0)")
    op_id = client.execute("compute.operation", "create",
                           [{"field_1": 99999, "field_2": 99999}])[0]

    def blog():
        client.execute("compute.operation", "action_suma_blog", [op_id])

    def ours():
        client.execute("compute.operation", "action_suma", [op_id])

    def noop():
        client.execute("res.users", "read", [client.uid], fields=["id"])

    variants = [("blog post: action_suma_blog (per-click proxy)", blog),
                ("ours: action_suma on 1 record", ours),
                ("no-op: res.users read ['id']", noop)]
    for _ in range(10):
        for _name, operation in variants:
            operation()
    record = client.execute("compute.operation", "read", [op_id], fields=["result", "state"])[0]
    if record["result"] != 199998 or record["state"] != "done":
        raise SystemExit("action_suma did not compute 199998: %r" % record)
    samples = interleaved(variants, sizes["click_rounds"], sizes["click_per_round"])
    med = {name: report.timing(name, values) for name, values in samples.items()}
    blog_med, ours_med, noop_med = (med[name] for name, _ in variants)
    report.ratio("blog-post click / our click  (the speed-up)", blog_med / ours_med)
    report.ratio("our click / no-op read", ours_med / noop_med)
    report.line("  our click above the no-op read: %.2f ms; the blog post's: %.2f ms"
                % (ours_med - noop_med, blog_med - noop_med))
    results["click_speedup"] = blog_med / ours_med


def phase_batch(report, client, raw, sizes, results):
    n = sizes["batch_records"]
    report.header("(3) %d records in one action_suma vs %d raw pipelined call_async" % (n, n))
    ids = client.execute("compute.operation", "create",
                         [{"field_1": i, "field_2": 2 * i} for i in range(n)])

    def batch():
        client.execute("compute.operation", "action_suma", ids)

    def pipelined():
        replies = [raw.compute.method.call_async(i, 2 * i) for i in range(n)]
        for i, reply in enumerate(replies):
            assert reply.result() == 3 * i

    batch()  # warm-up, and check the sums landed
    pipelined()
    rows = client.execute("compute.operation", "search_read", [("id", "in", ids[:5])],
                          fields=["field_1", "result", "state"])
    if any(row["state"] != "done" or row["result"] != 3 * row["field_1"] for row in rows):
        raise SystemExit("action_suma on %d records did not compute the sums: %r" % (n, rows))
    samples = interleaved([("action_suma on %d ids (XML-RPC)" % n, batch),
                           ("raw: %d call_async, then collect" % n, pipelined)],
                          sizes["batch_reps"], 1)
    meds = [report.timing(name, values) for name, values in samples.items()]
    report.line("  per record: batch %.3f ms, raw %.3f ms" % (meds[0] / n, meds[1] / n))
    report.ratio("raw time / batch time", meds[1] / meds[0])
    results["batch_ratio"] = meds[1] / meds[0]
    return ids


def phase_cluster(report, client, odoo_src, sizes, results):
    """One click and one large action_suma through two Odoo servers on one database: one on the
    single node, one on a three-node cluster, each with one services instance; interleaved."""
    from tools.harness.cluster import RabbitCluster

    n = sizes["cluster_batch_records"]
    report.header("(8) three-node RabbitMQ cluster (quorum queues) vs the single node: one click, "
                  "and %d records in one action_suma" % n)
    cluster = RabbitCluster(name="bench")
    service = cluster_odoo = None
    try:
        cluster.start()
        url = cluster.url()
        service = NamekoRun(["--broker", url], cwd=SERVICES_ROOT, extra_env={
            "HEARTBEAT_URL": "", "WEB_SERVER_ADDRESS": "127.0.0.1:%d" % CLUSTER_SERVICES_WEB_PORT},
            output=os.path.join(BENCH_DIR, "services-cluster.log")).start()
        wait_until(lambda: any(row["queue"]["name"] == "rpc-compute" for row in cluster.api(
            "consumers/%s" % cluster.vhost)), START_TIMEOUT, what="services on the cluster")
        cluster_odoo = BenchOdoo(odoo_src, url, port=CLUSTER_ODOO_PORT, name="odoo-cluster")
        cluster_odoo.start()
        clients = [("single node", client), ("cluster", OdooClient(cluster_odoo.url))]
        clicks, batches = [], []
        for label, each in clients:
            op_id = each.execute("compute.operation", "create", [{"field_1": 1, "field_2": 2}])[0]
            ids = each.execute("compute.operation", "create",
                               [{"field_1": i, "field_2": 2 * i} for i in range(n)])
            clicks.append(("click, %s" % label, lambda each=each, op_id=op_id: each.execute(
                "compute.operation", "action_suma", [op_id])))
            batches.append(("%d records, %s" % (n, label), lambda each=each, ids=ids: each.execute(
                "compute.operation", "action_suma", ids)))
            batches[-1][1]()  # warm-up, and check the sums landed
            rows = each.execute("compute.operation", "read", ids[:5], fields=["state", "result"])
            if any(row["state"] != "done" for row in rows):
                raise SystemExit("action_suma on the %s did not compute: %r" % (label, rows))
        click_med = [report.timing(name, values) for name, values in interleaved(
            clicks, sizes["click_rounds"], sizes["click_per_round"]).items()]
        batch_med = [report.timing(name, values) for name, values in interleaved(
            batches, sizes["batch_reps"], 1).items()]
        report.ratio("click: cluster / single node", click_med[1] / click_med[0])
        report.ratio("%d records: cluster / single node" % n, batch_med[1] / batch_med[0])
        results["cluster_click_ratio"] = click_med[1] / click_med[0]
        results["cluster_batch_ratio"] = batch_med[1] / batch_med[0]
    finally:
        if cluster_odoo is not None:
            cluster_odoo.stop()
        if service is not None:
            service.stop()
        cluster.shutdown()


def phase_soak(report, client, odoo, admin, ids, sizes, results):
    total = sizes["soak_calls"]
    clicks = int(total * sizes["soak_click_share"])
    batch_size = len(ids)
    batches = max(0, (total - clicks) // batch_size)
    clicks = total - batches * batch_size
    threads = sizes["soak_threads"]
    report.header("(5) Odoo server RSS and broker queues before/after %d calls "
                  "(%d single clicks from %d threads + %d x action_suma on %d records)"
                  % (total, clicks, threads, batches, batch_size))

    amqp_port = urllib.parse.urlsplit(odoo.amqp_uri).port or 5672

    def snapshot():
        time.sleep(1.5)  # let the management API catch up
        queues = admin.queues(VHOST)
        return {"rss": children_rss_kib(odoo.proc.pid),
                "queues": {q["name"] for q in queues},
                "idle_queues": sum(1 for q in queues if not q.get("consumers")),
                "connections": tcp_connections_to(odoo.proc.pid, amqp_port)}

    # one record per thread: concurrent writes on one row would be serialization failures
    thread_ops = client.execute("compute.operation", "create",
                                [{"field_1": i, "field_2": i} for i in range(threads)])

    def click_worker(record_id, count):
        own = client.fork()
        for _ in range(count):
            own.execute("compute.operation", "action_suma", [record_id])

    def run(share_clicks, share_batches):
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            per_thread = [share_clicks // threads + (1 if i < share_clicks % threads else 0)
                          for i in range(threads)]
            futures = [pool.submit(click_worker, record_id, count)
                       for record_id, count in zip(thread_ops, per_thread, strict=True)]
            for _ in range(share_batches):
                client.execute("compute.operation", "action_suma", ids)
            for future in futures:
                future.result()

    run(threads * 5, 1)  # warm-up: every thread's first request, the pool at full size
    before = snapshot()
    started = time.perf_counter()
    run(clicks // 2, batches // 2)
    middle = snapshot()
    run(clicks - clicks // 2, batches - batches // 2)
    elapsed = time.perf_counter() - started
    after = snapshot()
    report.line("  %d calls in %.1f s (%.0f calls/s through Odoo)" % (total, elapsed,
                                                                        total / elapsed))
    rss_delta = after["rss"] - before["rss"]
    report.line("  Odoo server RSS     before %8.1f MiB   half-way %8.1f MiB   after %8.1f MiB"
                "   delta %+7.1f MiB" % (before["rss"] / 1024, middle["rss"] / 1024,
                                         after["rss"] / 1024, rss_delta / 1024))
    # Reply queues of closed nameko proxies are not deleted: they expire 5 min after their last
    # use (x-expires). So count the queues that appeared during the calls and are still there.
    new_queues = after["queues"] - before["queues"]
    report.line("  broker queues       before %8d       half-way %8d       after %8d"
                "       delta %+5d" % (len(before["queues"]), len(middle["queues"]),
                                       len(after["queues"]),
                                       len(after["queues"]) - len(before["queues"])))
    report.line("    of which without consumer (orphaned reply queues, expire after 5 min): "
                "before %d, after %d" % (before["idle_queues"], after["idle_queues"]))
    report.line("    queues created during the %d calls and still there: %d%s"
                % (total, len(new_queues),
                   " (%s...)" % ", ".join(sorted(new_queues)[:3]) if new_queues else ""))
    report.line("  Odoo's AMQP conns   before %8d       half-way %8d       after %8d"
                "       delta %+5d" % (before["connections"], middle["connections"],
                                       after["connections"],
                                       after["connections"] - before["connections"]))
    # Growth with the number of calls: the second half (same calls again, pools warm) must add
    # no queue and no connection; the first half may still fill a pool to its size.
    late_queues = after["queues"] - middle["queues"]
    report.line("  second half: %d new queue(s), Odoo AMQP connections %+d"
                % (len(late_queues), after["connections"] - middle["connections"]))
    rss_ok = rss_delta <= RSS_TOLERANCE_KIB
    queues_ok = not late_queues and after["connections"] <= middle["connections"]
    report.line("  memory: %s (tolerance %d MiB)   queues and connections: %s"
                % ("OK" if rss_ok else "GROWTH", RSS_TOLERANCE_KIB // 1024,
                   "OK" if queues_ok else "GROWTH"))
    results["soak_ok"] = rss_ok and queues_ok
    results["soak_detail"] = (
        "RSS %+.1f MiB; new queues %d (second half %d); Odoo AMQP connections %+d "
        "(second half %+d)" % (rss_delta / 1024, len(new_queues), len(late_queues),
                               after["connections"] - before["connections"],
                               after["connections"] - middle["connections"]))


CALL_MODEL = "compute.bridge.call"
OPEN_CALL_STATES = ("queued", "sent")


def has_background_calls(client):
    return bool(client.execute("ir.model", "search_count", [("model", "=", CALL_MODEL)]))


def open_calls(client, domain=()):
    return client.execute(CALL_MODEL, "search_count",
                          [("state", "in", list(OPEN_CALL_STATES)), *domain])


def phase_queue_click(report, client, sizes, results):
    """(6a) on the server without cron threads: queuing is all the click does."""
    report.header("(6a) the \"Suma in background\" click over XML-RPC vs Odoo's own no-op write "
                  "(server without cron threads: the calls stay queued)")
    total = 10 + sizes["queue_rounds"] * sizes["queue_per_round"]
    fresh = iter(client.execute("compute.operation", "create",
                                [{"field_1": i, "field_2": 0.5} for i in range(total)]))
    partner = client.execute("res.users", "read", [client.uid],
                             fields=["partner_id"])[0]["partner_id"][0]

    def queue_click():  # a record never queued before: the click queues one call
        client.execute("compute.operation", "action_suma_queue", [next(fresh)])

    def noop_write():  # one row written with the value it already has
        client.execute("res.partner", "write", [partner], {"ref": "bench"})

    variants = [("queue: action_suma_queue on 1 record", queue_click),
                ("no-op: res.partner write (same value)", noop_write)]
    for _ in range(5):
        for _name, operation in variants:
            operation()
    samples = interleaved(variants, sizes["queue_rounds"], sizes["queue_per_round"])
    queue_med, noop_med = (report.timing(name, samples[name]) for name, _ in variants)
    report.ratio("queue click / no-op write", queue_med / noop_med)
    results["queue_click_ratio"] = queue_med / noop_med


def queue_backlog(report, client, count):
    """``count`` operations created and queued, in chunks; their ids."""
    started = time.perf_counter()
    ids = []
    for offset in range(0, count, QUEUE_CHUNK):
        end = min(count, offset + QUEUE_CHUNK)
        chunk = client.execute("compute.operation", "create",
                               [{"field_1": i, "field_2": 0.25} for i in range(offset, end)])
        client.execute("compute.operation", "action_suma_queue", chunk)
        ids.extend(chunk)
    report.line("  %d records created and queued in %.1f s (%d per request), no cron thread "
                "running" % (count, time.perf_counter() - started, QUEUE_CHUNK))
    return ids


def phase_drain(report, odoo, raw, ids, pending, results):
    """(6b) the server restarted with a cron thread drains the backlog queued in (6a):
    ``pending`` calls, the ``ids``' and those of the clicks measured in (6a)."""
    n = len(ids)
    report.header("(6b) %d background calls drained by the server's %d cron threads vs %d raw "
                  "pipelined call_async (services: 1 instance)"
                  % (n, ODOO_DEFAULT_CRON_THREADS, n))
    started = time.perf_counter()
    odoo.start_with_cron()
    answered = time.perf_counter()
    client = OdooClient(odoo.url)
    mine = [("res_model", "=", "compute.operation"), ("res_id", "in", ids)]
    # The server wakes its runner a few seconds after it starts (the wake-ups of the queuing
    # transactions came while no cron thread was running): the drain is timed from the first
    # call taken to the last one done.
    wait_until(lambda: open_calls(client, [("state", "=", "sent")]) or open_calls(client)
               < pending, DRAIN_TIMEOUT, interval=DRAIN_POLL / 5, what="the first call taken")
    first_taken = time.perf_counter()
    wait_until(lambda: open_calls(client) == 0, DRAIN_TIMEOUT, interval=DRAIN_POLL,
               what="the background calls drained")
    drained = time.perf_counter() - first_taken
    states = {state: client.execute(CALL_MODEL, "search_count", [*mine, ("state", "=", state)])
              for state in ("done", "failed", "cancelled")}
    sample = client.execute("compute.operation", "read", ids[-3:], fields=["field_1", "result",
                                                                            "state"])
    if states.get("done") != n or any(row["state"] != "done"
                                      or row["result"] != row["field_1"] + 0.25
                                      for row in sample):
        raise SystemExit("the background calls did not all compute their sums: %r %r"
                         % (states, sample))
    report.line("  server restarted with its cron threads: answered after %.1f s; first call "
                "taken %.1f s later; every call done %.2f s after "
                "that" % (answered - started, first_taken - answered, drained))

    def pipelined():
        replies = [raw.compute.method.call_async(i, 0.25) for i in range(n)]
        for i, reply in enumerate(replies):
            assert reply.result() == i + 0.25

    raw_started = time.perf_counter()
    pipelined()
    raw_seconds = time.perf_counter() - raw_started
    drain_rate, raw_rate = pending / drained, n / raw_seconds
    report.line("  background drain %8.0f calls/s  (%d in %.2f s, from the first call taken; "
                "%d of them queued by the clicks of 6a)" % (drain_rate, pending, drained,
                                                            pending - n))
    report.line("  raw pipelined    %8.0f calls/s  (%d in %.2f s)" % (raw_rate, n, raw_seconds))
    report.ratio("background drain rate / raw pipelined rate", drain_rate / raw_rate)
    results["drain_ratio"] = drain_rate / raw_rate
    # The benchmark database is kept between runs: its ended calls (6a's and 6b's) go now,
    # not after the retention the daily cleanup keeps.
    call_ids = client.execute(CALL_MODEL, "search",
                              [("state", "not in", list(OPEN_CALL_STATES))])
    client.execute(CALL_MODEL, "unlink", call_ids)
    report.line("  rows: %d call rows of this run deleted; %d left in compute_bridge_call"
                % (len(call_ids), client.execute(CALL_MODEL, "search_count", [])))


def run_load(amqp_uri, calls, clients, window):
    """Start `clients` load processes, release them together, return calls/s over the run."""
    script = os.path.join(REPO, "benchmarks", "load.py")
    procs = [subprocess.Popen([sys.executable, script, amqp_uri, str(calls // clients),
                               str(window)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
             for _ in range(clients)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("a load process did not start")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    start = min(out["start"] for out in outputs)
    end = max(out["end"] for out in outputs)
    done = sum(out["calls"] for out in outputs)
    return (done / (end - start), done, end - start, sum(out["errors"] for out in outputs),
            sum(out["cpu"] for out in outputs))


def phase_throughput(report, amqp_uri, services, sizes, results):
    n, clients, window = (sizes["throughput_calls"], sizes["throughput_clients"],
                          sizes["throughput_window"])
    report.header("(4) services throughput: %d calls from %d client processes, %d in flight "
                  "each (persistent proxies, publish confirms off on the client)"
                  % (n, clients, window))
    broker_pid = listening_pid(urllib.parse.urlsplit(amqp_uri).port or 5672)

    def cpu_now():
        """CPU seconds so far: services instances, broker (if local)."""
        return [sum(cpu_seconds(proc.pid) for proc in services.procs),
                cpu_seconds(broker_pid) if broker_pid else 0.0]

    rates = {}
    for instances in (1, 2):
        services.start(instances)
        run_load(amqp_uri, min(n, 400), clients, window)  # warm-up
        cpu_before = cpu_now()
        rate, done, seconds, errors, client_cpu = run_load(amqp_uri, n, clients, window)
        cpu = [after - before for after, before in zip(cpu_now(), cpu_before, strict=True)]
        cpu.append(client_cpu)
        rates[instances] = rate
        report.line("  %d instance(s): %6d calls in %6.2f s  = %7.0f calls/s   errors %d"
                    % (instances, done, seconds, rate, errors))
        report.line("      CPU per call: services %.2f ms (%.0f%% of a core), broker %s, "
                    "load clients %.2f ms; all: %.2f ms -> %d cores allow ~%.0f calls/s"
                    % (cpu[0] / done * 1000, cpu[0] / seconds * 100,
                       "%.2f ms" % (cpu[1] / done * 1000) if broker_pid else "n/a (remote)",
                       cpu[2] / done * 1000, sum(cpu) / done * 1000, os.cpu_count(),
                       os.cpu_count() * done / sum(cpu) if sum(cpu) else 0))
    report.ratio("2 instances / 1 instance", rates[2] / rates[1])
    results["throughput_2"] = rates[2]
    services.stop_extra(1)


def print_targets(report, results):
    report.header("targets")

    def add(name, value, ok, detail):
        status = report.target(name, ok if value is not None else None, detail)
        report.line("  [%s] %s" % (status, name))
        report.line("         %s" % detail)

    value = results.get("click_speedup")
    add("click over XML-RPC >= %.1fx faster than the blog post's way (aim %.0fx)"
        % (TARGET_CLICK_SPEEDUP, TARGET_CLICK_AIM), value,
        value is not None and value >= TARGET_CLICK_SPEEDUP,
        "measured %.3fx%s" % (value, " (aim reached)" if value >= TARGET_CLICK_AIM else
                             " (aim %.0fx not reached)" % TARGET_CLICK_AIM)
        if value is not None else "not measured")
    value = results.get("inproc_pooled_ratio")
    add("one in-process call <= %.1fx a raw persistent nameko call" % TARGET_INPROC_OVERHEAD,
        value, value is not None and value <= TARGET_INPROC_OVERHEAD,
        "measured %.3fx (pooled median / raw median)" % value if value is not None
        else "not measured")
    value = results.get("batch_ratio")
    add("1,000-record batch >= %.1fx raw pipelined nameko (raw time / batch time)"
        % TARGET_BATCH_RATIO, value, value is not None and value >= TARGET_BATCH_RATIO,
        "measured %.3fx" % value if value is not None else "not measured")
    value = results.get("throughput_2")
    add("services >= %d calls/s with 2 instances" % TARGET_THROUGHPUT, value,
        value is not None and value >= TARGET_THROUGHPUT,
        "measured %.0f calls/s" % value if value is not None else "not measured")
    value = results.get("queue_click_ratio")
    add("\"Suma in background\" click <= %.1fx Odoo's own no-op write over XML-RPC"
        % TARGET_QUEUE_CLICK, value, value is not None and value <= TARGET_QUEUE_CLICK,
        "measured %.3fx (queue click median / no-op write median)" % value
        if value is not None else "not measured")
    value = results.get("drain_ratio")
    add("background calls drain >= %.1fx the rate of raw pipelined nameko calls"
        % TARGET_DRAIN_RATIO, value, value is not None and value >= TARGET_DRAIN_RATIO,
        "measured %.3fx" % value if value is not None else "not measured")
    value = results.get("telemetry_ratio")
    add("a bare call with metrics and tracing <= %.2fx one without (aim)"
        % TARGET_TELEMETRY_RATIO, value, value is not None and value <= TARGET_TELEMETRY_RATIO,
        "measured %.3fx (on median / off median, the call alone in process)" % value
        if value is not None else "not measured")
    value = results.get("telemetry_click_ratio")
    add("a click with metrics and tracing <= %.2fx one without (aim)" % TARGET_TELEMETRY_RATIO,
        value, value is not None and value <= TARGET_TELEMETRY_RATIO,
        "measured %.3fx (on median / off median, action_suma over XML-RPC)" % value
        if value is not None else "not measured")
    value = results.get("soak_ok")
    add("no growth in Odoo memory or broker queues over 10,000 calls", value, bool(value),
        results.get("soak_detail", "not measured"))


# ---------------------------------------------------------------------------------------------

def _terminated(signum, _frame):
    raise SystemExit(128 + signum)  # unwind through the finally blocks that stop what we started


def parse_args():
    parser = argparse.ArgumentParser(description="compute_bridge benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument("--phases", default="1,2,3,5,6,7,8,4",
                        help="comma-separated phases to run (default all: 1,2,3,5,6,7,8,4)")
    parser.add_argument("--fresh-db", action="store_true", help="drop the benchmark database")
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    sizes = dict(SIZES)
    if args.quick:
        sizes.update(inproc_rounds=4, inproc_per_round=10, click_rounds=4, click_per_round=5,
                     batch_reps=1, soak_calls=2000, throughput_calls=1000, queue_rounds=4,
                     queue_per_round=5, drain_calls=1000, telemetry_rounds=4,
                     telemetry_per_round=50, telemetry_click_rounds=4,
                     telemetry_click_per_round=5, cluster_batch_records=200)
    for key, value in sizes.items():  # e.g. BENCH_SOAK_THREADS=3 tools/bench.sh
        override = os.environ.get("BENCH_" + key.upper())
        if override:
            sizes[key] = type(value)(override)
    return args, sizes


class RawProxy:
    """The raw persistent nameko proxy shared by phases 1 and 3, started on first use."""

    def __init__(self, amqp_uri):
        self.amqp_uri = amqp_uri
        self.standalone = None
        self.proxy = None

    def get(self):
        if self.proxy is None:
            from nameko.standalone.rpc import ClusterRpcProxy

            self.standalone = ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=30)
            self.proxy = self.standalone.start()
        return self.proxy

    def stop(self):
        if self.standalone is not None:
            try:
                self.standalone.stop()
            except Exception:  # noqa: BLE001 - cleaning up
                pass
        self.standalone = self.proxy = None


def odoo_phases(report, args, sizes, results, amqp_uri, admin, raw, running):
    """Phases 2, 3, 5 and 6, against one Odoo server (kept in `running` for the cleanup)."""
    odoo_src = os.environ.get("ODOO_SRC", "")
    if not odoo_src:
        report.line("")
        report.line("!!! no Odoo 18.0 source (ODOO_SRC): phases 2, 3, 5 and 6 skipped")
        return
    if not os.path.exists(os.path.join(REPO, "compute_bridge", "__manifest__.py")):
        report.line("")
        report.line("!!! compute_bridge addon not found: phases 2, 3, 5 and 6 skipped")
        return
    odoo = running["odoo"] = BenchOdoo(odoo_src, amqp_uri)
    odoo.prepare(fresh=args.fresh_db)
    odoo.start()
    client = OdooClient(odoo.url)
    if "2" in args.phases:
        phase_click(report, client, sizes, results)
    if args.phases & {"3", "5"}:
        ids = phase_batch(report, client, raw.get(), sizes, results)
        if "5" in args.phases:
            phase_soak(report, client, odoo, admin, ids, sizes, results)
    if "8" in args.phases:
        phase_cluster(report, client, odoo_src, sizes, results)
    if "6" in args.phases:
        if has_background_calls(client):
            if open_calls(client):  # left by an interrupted run: not ours to measure
                client.execute(CALL_MODEL, "unlink", client.execute(
                    CALL_MODEL, "search", [("state", "in", list(OPEN_CALL_STATES))]))
            phase_queue_click(report, client, sizes, results)
            backlog = queue_backlog(report, client, sizes["drain_calls"])
            pending = open_calls(client)
            odoo.stop()
            phase_drain(report, odoo, raw.get(), backlog, pending, results)
        else:
            report.line("")
            report.line("!!! no background calls (compute.bridge.call) in this addon: phase 6 "
                        "skipped")
    odoo.stop()
    running["odoo"] = None


def main():
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args, sizes = parse_args()

    os.makedirs(BENCH_DIR, exist_ok=True)
    amqp_root = os.environ.get("AMQP_URI", "pyamqp://guest:guest@localhost:5672")
    admin = RabbitAdmin(os.environ.get("RABBIT_API_URI", "http://guest:guest@localhost:15672"))
    admin.create_vhost(VHOST)
    amqp_uri = vhost_uri(amqp_root, VHOST)

    report = Report()
    report.line("compute_bridge benchmarks  %s" % time.strftime("%Y-%m-%d %H:%M:%S"))
    report.line("machine: %d CPU(s), load average %s; broker vhost %r; services from %s"
                % (os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()), VHOST,
                   SERVICES_ROOT))
    report.line("timings: median and p90 over N calls, variants interleaved round by round; "
                "ratios are medians measured side by side in this run")
    results = {}
    services = Services(amqp_uri, admin)
    raw = RawProxy(amqp_uri)
    running = {"odoo": None}
    try:
        services.start(1)
        if "1" in args.phases:
            phase_inproc(report, amqp_uri, raw.get(), sizes, results)
        if args.phases & ODOO_PHASES:
            odoo_phases(report, args, sizes, results, amqp_uri, admin, raw, running)
        raw.stop()
        if "7" in args.phases:
            phase_telemetry(report, amqp_root, admin, sizes, results,
                            odoo_db_ready=bool(args.phases & ODOO_PHASES))
        if "4" in args.phases:
            phase_throughput(report, amqp_uri, services, sizes, results)
        print_targets(report, results)
    finally:
        raw.stop()
        if running["odoo"] is not None:
            running["odoo"].stop()
        services.stop()
        try:
            admin.delete_vhost(VHOST)
        except OSError as error:
            log("could not delete vhost %s: %s", VHOST, error)
        report.write(RESULTS)
        log("written to %s", os.path.relpath(RESULTS, REPO))
    return 0  # figures, not a test: a missed target is reported (MISS), not an error


if __name__ == "__main__":
    sys.exit(main())

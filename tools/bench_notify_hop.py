"""Measure compute's round trip, throughput and the cost of the notify hop (event vs rpc).

    .venv/bin/python tools/bench_notify_hop.py [--broker pyamqp://guest:guest@localhost]
        [--api http://guest:guest@localhost:15672] [--calls 2000]

Runs real `nameko run --broker <scratch vhost> services` processes (1 or 2 instances, with
NOTIFY_VIA=event or rpc) and calls them from an unpatched ClusterRpcProxy, as Odoo does. The
scratch vhost is created through the management API and deleted at the end.
"""

import argparse
import os
import statistics
import sys
import time
import urllib.parse
import uuid

from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.harness.broker import api_request  # noqa: E402
from tools.harness.nameko_run import NamekoRun, wait_compute  # noqa: E402

IN_FLIGHT = 50  # concurrent calls kept outstanding in the throughput phase
START_TIMEOUT = 60


def start_services(amqp_uri, count, **env):
    """``count`` `nameko run` instances (tools/harness), once compute answers and every instance
    had time to bring its consumers up."""
    runs = [NamekoRun(["--broker", amqp_uri], extra_env=env, output=os.devnull).start()
            for _ in range(count)]
    try:
        wait_compute(amqp_uri, START_TIMEOUT, runs[0])
        time.sleep(3 if count > 1 else 1)  # let every instance's consumers come up
    except BaseException:
        stop_services(runs)
        raise
    return runs


def stop_services(runs):
    for run in runs:
        run.stop()


def latency(amqp_uri, calls):
    """Sequential round trips: milliseconds per call (p50, p99)."""
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=10) as rpc:
        for _ in range(100):  # warm up
            rpc.compute.method(99999, 99999)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            rpc.compute.method(99999, 99999)
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def throughput(amqp_uri, calls):
    """Calls per second with IN_FLIGHT calls outstanding at any time."""
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as rpc:
        started = time.perf_counter()
        pending = []
        for i in range(calls):
            pending.append(rpc.compute.method.call_async(i, i))
            if len(pending) >= IN_FLIGHT:
                pending.pop(0).result()
        for reply in pending:
            reply.result()
        return calls / (time.perf_counter() - started)


def hop_cost(amqp_uri, calls):
    """Milliseconds the sender spends per notification: event (with and without publish
    confirms) vs the blog post's rpc call_async (which also gets a reply back)."""
    config = {"AMQP_URI": amqp_uri}
    results = {}
    for confirms in (True, False):
        dispatch = event_dispatcher(config, use_confirms=confirms, delivery_mode=1)
        started = time.perf_counter()
        for i in range(calls):
            dispatch("compute", "operation_completed", "Operation completed %d" % i)
        results["event, confirms %s" % ("on" if confirms else "off")] = (
            (time.perf_counter() - started) * 1000 / calls)
    with ClusterRpcProxy(config, timeout=30) as rpc:
        started = time.perf_counter()
        replies = [rpc.notify.send.call_async("Operation completed %d" % i) for i in range(calls)]
        sent = time.perf_counter()
        for reply in replies:
            reply.result()
        done = time.perf_counter()
    results["rpc call_async (send only)"] = (sent - started) * 1000 / calls
    results["rpc call_async (send + reply)"] = (done - started) * 1000 / calls
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="pyamqp://guest:guest@localhost")
    parser.add_argument("--api", default="http://guest:guest@localhost:15672")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    vhost = "bench_%s" % uuid.uuid4().hex[:8]
    api_request(args.api, "vhosts/%s" % vhost, "PUT")
    user = urllib.parse.urlsplit(args.broker).username
    api_request(args.api, "permissions/%s/%s" % (vhost, user), "PUT",
                {"configure": ".*", "write": ".*", "read": ".*"})
    amqp_uri = "%s/%s" % (args.broker.rstrip("/"), vhost)
    try:
        for notify_via in ("event", "rpc"):
            processes = start_services(amqp_uri, 1, NOTIFY_VIA=notify_via)
            try:
                p50, p99 = latency(amqp_uri, args.calls)
                rate = throughput(amqp_uri, args.calls * 2)
                print("1 instance, NOTIFY_VIA=%-5s round trip p50 %.2f ms, p99 %.2f ms; "
                      "%.0f calls/s" % (notify_via, p50, p99, rate), flush=True)
                if notify_via == "event":
                    for name, cost in hop_cost(amqp_uri, args.calls).items():
                        print("notify hop, %-30s %.3f ms per message" % (name, cost), flush=True)
            finally:
                stop_services(processes)
        processes = start_services(amqp_uri, 2)
        try:
            p50, p99 = latency(amqp_uri, args.calls)
            rate = throughput(amqp_uri, args.calls * 2)
            print("2 instances, NOTIFY_VIA=event round trip p50 %.2f ms, p99 %.2f ms; "
                  "%.0f calls/s" % (p50, p99, rate), flush=True)
        finally:
            stop_services(processes)
    finally:
        api_request(args.api, "vhosts/%s" % vhost, "DELETE")


if __name__ == "__main__":
    main()

"""One load-generating process for the throughput phase (4); benchmarks/run.py starts several.

    python benchmarks/load.py AMQP_URI CALLS WINDOW [--confirms]

Opens one persistent nameko proxy, prints "ready", waits for a line on stdin ("go"), then keeps
WINDOW calls in flight (call_async; the oldest reply is collected before the next call is sent)
until CALLS replies have come back, checks every sum, and prints one JSON line:
{"calls": N, "start": t0, "end": t1, "errors": E, "cpu": seconds of CPU used while calling}
(time.time() stamps, comparable across processes).

Publish confirms are off by default: with them, each call_async waits one broker round trip for
its confirm before the next can be sent, and the client, not the services, sets the pace.
"""

import argparse
import collections
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", message="Mandatory delivery was requested")

from nameko.rpc import ServiceProxy  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("amqp_uri")
    parser.add_argument("calls", type=int)
    parser.add_argument("window", type=int)
    parser.add_argument("--confirms", action="store_true")
    args = parser.parse_args()

    standalone = ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=60)
    cluster = standalone.start()
    method = ServiceProxy(cluster._worker_ctx, "compute", cluster._reply_listener,
                          use_confirms=args.confirms).method
    assert method(1, 2) == 3  # connect, declare, warm up
    print("ready", flush=True)
    sys.stdin.readline()

    in_flight = collections.deque()
    errors = 0
    sent = 0
    start = time.time()
    cpu_start = time.process_time()
    while sent < args.calls or in_flight:
        while sent < args.calls and len(in_flight) < args.window:
            in_flight.append((sent, method.call_async(sent, sent)))
            sent += 1
        number, reply = in_flight.popleft()
        try:
            if reply.result() != 2 * number:
                errors += 1
        except Exception:  # noqa: BLE001 - count it, the report shows it
            errors += 1
    end = time.time()
    cpu = time.process_time() - cpu_start
    standalone.stop()
    print(json.dumps({"calls": args.calls, "start": start, "end": end, "errors": errors,
                      "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()

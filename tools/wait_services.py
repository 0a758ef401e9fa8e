"""Wait until the compute service answers over RPC (used after starting `nameko run`).

    python tools/wait_services.py [AMQP_URI] [--timeout SECONDS]
"""

import argparse
import sys
import time

DEFAULT_TIMEOUT = 90  # seconds: a cold `nameko run` on 2 cores takes a few seconds
CALL_TIMEOUT = 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("amqp_uri", nargs="?", default="pyamqp://guest:guest@localhost")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args()

    from nameko.standalone.rpc import ClusterRpcProxy

    deadline = time.monotonic() + args.timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=CALL_TIMEOUT) as rpc:
                if rpc.compute.method(1, 2) == 3:
                    print("services are up", file=sys.stderr)
                    return 0
        except Exception as error:  # noqa: BLE001 - any failure (unknown service...) means "not yet"
            last_error = error
        time.sleep(0.5)
    print("services did not answer within %ss: %r" % (args.timeout, last_error), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Paths, logging, ports, waits and the state file shared by the harness modules."""

import contextlib
import os
import shlex
import socket
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_DIR = os.environ.get("COMPUTE_BRIDGE_RUN_DIR") or os.path.join(REPO, ".run")
STATE_FILE = os.path.join(RUN_DIR, "stack.env")
LOCAL_HOSTS = ("localhost", "127.0.0.1")
POLL_INTERVAL = 0.3  # seconds between two looks at something we wait for


def log(message, *args):
    print("[stack] " + (message % args if args else message), file=sys.stderr, flush=True)


class HarnessError(SystemExit):
    """What the harness cannot do, said in one line (no traceback) and exit status 1."""

    def __init__(self, message):
        super().__init__("[stack] " + message)


def is_root():
    return os.geteuid() == 0


def port_open(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host="127.0.0.1", candidates=None):
    """A port nothing listens on: the first of ``candidates`` (better below the ephemeral range,
    where no outgoing connection takes it before our server binds it), else one the system
    picks."""
    for port in candidates or ():
        if not port_open(host, port, timeout=0.2):
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, interval=POLL_INTERVAL, what="condition"):
    """``predicate()``'s first true value within ``timeout`` s, else TimeoutError. An exception
    from ``predicate`` means "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as error:  # noqa: BLE001 - "not yet", whatever the reason
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError("%s not reached within %ss (last: %r)" % (what, timeout, last))


def read_state():
    state = {}
    with contextlib.suppress(FileNotFoundError), open(STATE_FILE) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                state[key] = shlex.split(value)[0] if value else ""
    return state


def write_state(state):
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(STATE_FILE, "w") as handle:
        for key in sorted(state):
            handle.write("export %s=%s\n" % (key, shlex.quote(str(state[key]))))

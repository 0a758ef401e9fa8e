"""One ``nameko run`` process: the services as the blog post runs them, or a test module."""

import os
import time
import warnings

from .common import REPO
from .odoo_server import venv_bin
from .process import STOP_GRACE, spawn, stop

START_TIMEOUT = 90  # seconds: a cold `nameko run` on two busy cores takes a few
CALL_TIMEOUT = 2
POLL = 0.2


class NamekoRun:
    """``nameko run <args> <module>`` in ``cwd`` (the repository), in a session of its own.

    ``env`` replaces our environment when given (``extra_env`` is added on top of either);
    ``output`` is a log file path, or None for our own output.
    """

    def __init__(self, args=(), module="services", env=None, extra_env=None, output=None,
                 cwd=REPO):
        self.command = [venv_bin("nameko"), "run", *args, module]
        self.env = dict(os.environ if env is None else env)
        self.env.update({key: str(value) for key, value in (extra_env or {}).items()})
        self.output = output
        self.cwd = cwd
        self.proc = None

    def start(self):
        self.proc = spawn(self.command, self.output, self.env, self.cwd)
        return self

    @property
    def pid(self):
        return self.proc.pid

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.output, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, grace=STOP_GRACE):
        return stop(self.proc, grace)


def wait_compute(amqp_uri, timeout=START_TIMEOUT, process=None):
    """Wait until ``compute.method`` answers at ``amqp_uri`` (needs nameko); fail at once when
    ``process`` (a :class:`NamekoRun`) exits."""
    with warnings.catch_warnings():  # eventlet's deprecation notice, on import: noise here
        warnings.simplefilter("ignore")
        from nameko.standalone.rpc import ClusterRpcProxy

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive:
            raise RuntimeError("nameko run exited with %s" % process.proc.returncode)
        try:
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=CALL_TIMEOUT) as rpc:
                if rpc.compute.method(1, 2) == 3:
                    return
        except Exception as error:  # noqa: BLE001 - any failure (unknown service...) is "not yet"
            last = error
        time.sleep(POLL)
    raise RuntimeError("compute did not answer within %ss: %r" % (timeout, last))

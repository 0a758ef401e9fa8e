"""Starting and stopping the processes the harness runs.

Every process is started in a session of its own (:func:`spawn`): a signal sent to the group of
``make run`` or of a test run then never reaches it directly, and :func:`stop` can end it together
with its children (Odoo's workers) through its process group.
"""

import contextlib
import os
import signal
import subprocess

STOP_GRACE = 20  # seconds a process gets to stop cleanly on SIGTERM before SIGKILL
KILL_WAIT = 10


def spawn(args, output=None, env=None, cwd=None):
    """Start ``args`` in a new session. ``output``: a log file path (appended to), None for our
    own output, or ``subprocess.PIPE``."""
    handle = open(output, "ab") if isinstance(output, str) else None  # noqa: SIM115
    stdout = handle or output
    try:
        return subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.STDOUT if stdout else None,
                                start_new_session=True)
    finally:
        if handle:
            handle.close()  # the child has its own copy


def _signal_group(proc, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def stop(proc, grace=STOP_GRACE):
    """SIGTERM to the process group of ``proc`` (a :func:`spawn`-ed Popen), wait ``grace`` s,
    then SIGKILL. Never SIGINT: a job a script starts in the background ignores it; Odoo and
    ``nameko run`` both stop cleanly on SIGTERM. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(KILL_WAIT)
    # the group may outlive its leader (prefork workers): no process of ours is left behind
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


class Stopped(BaseException):
    """Raised in the main thread by a stop signal (see :func:`stop_on_signals`); a BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum):
        super().__init__("stopped by signal %d" % signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _raise_stopped(signum, _frame):
    raise Stopped(signum)


def stop_on_signals():
    """From now on SIGTERM, SIGINT and SIGHUP raise :class:`Stopped` in the main thread."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)


def ignore_stop_signals():
    """For a cleanup that must finish: ``make`` forwards SIGTERM to its child after the group
    got it, and a user may press Ctrl-C twice. The processes we start from here on inherit it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

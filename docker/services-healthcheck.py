"""The services container's health check: GET /health, and stop the services when it keeps failing.

Docker only marks a container unhealthy; plain compose never restarts it. So after
``HEALTHCHECK_RESTART_AFTER`` failed checks in a row this check ends the ``nameko run`` process
(SIGTERM, then SIGKILL at the next failure) and ``restart: unless-stopped`` starts a new one.
With ``init: true`` (compose) or ``docker run --init``, nameko is a child of Docker's init and
SIGKILL works. Docker's init itself (PID 1) is never signalled: its argv holds the command too,
and the kernel ignores a SIGKILL sent to PID 1 from inside its namespace.

The count is kept per ``nameko run`` pid (a restarted container starts again from zero), and
failures during ``HEALTHCHECK_START_PERIOD`` seconds after that process started are not counted.

Exit status: 0 healthy, 1 unhealthy (Docker's HEALTHCHECK convention).
"""

import os
import signal
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = "8000"  # services/settings.py's DEFAULT_WEB_SERVER_ADDRESS
DEFAULT_RESTART_AFTER = 3  # Docker's own default number of retries before "unhealthy"
REQUEST_TIMEOUT = 2  # seconds; below the HEALTHCHECK --timeout
FAILURES_FILE = "/tmp/compute_bridge-health-failures"
INIT_PID = 1
DEFAULT_START_PERIOD = 30  # seconds: services/Dockerfile's HEALTHCHECK --start-period
NO_TARGET = 0


def health_url():
    port = os.environ.get("WEB_SERVER_ADDRESS", DEFAULT_PORT).rsplit(":", 1)[-1]
    return os.environ.get("HEALTHCHECK_URL") or "http://127.0.0.1:%s/health" % port


def healthy(url):
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
            return response.status == 200, "HTTP %s" % response.status
    except urllib.error.HTTPError as error:
        return False, "HTTP %s" % error.code
    except OSError as error:  # refused, timed out, reset
        return False, str(error)


def read_failures(path, pid):
    """The failures counted so far against ``pid``; 0 when the file counts another process."""
    try:
        with open(path) as handle:
            counted_pid, count = (int(field) for field in handle.read().split())
    except (FileNotFoundError, ValueError):
        return 0
    return count if counted_pid == pid else 0


def write_failures(path, pid, count):
    with open(path, "w") as handle:
        handle.write("%d %d" % (pid, count))


def stat_fields(pid):
    """/proc/PID/stat after "(comm)", which may hold spaces: [state, ppid, ...]."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def parent_pid(pid):
    fields = stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else None


def age(pid):
    """Seconds since ``pid`` started (field 22 of its stat, in clock ticks since boot)."""
    fields = stat_fields(pid)
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")


def runs_nameko(pid):
    """Whether the process runs `nameko run` itself: python or the nameko script, with
    "nameko run" in its argv (a wrapper such as docker-init has it in its argv as well)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    program = os.path.basename(argv[0])
    if not (program.startswith("python") or program == "nameko"):
        return False
    return any(os.path.basename(arg) == "nameko" and following == "run"
               for arg, following in zip(argv, argv[1:], strict=False))


def nameko_pids(init_pid):
    """The `nameko run` processes among init_pid's children; never init_pid (PID 1) itself."""
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and int(name) != init_pid and parent_pid(int(name)) == init_pid
            and runs_nameko(int(name))]


def main():
    url = health_url()
    failures_file = os.environ.get("HEALTHCHECK_FAILURES_FILE", FAILURES_FILE)
    restart_after = int(os.environ.get("HEALTHCHECK_RESTART_AFTER", DEFAULT_RESTART_AFTER))
    start_period = float(os.environ.get("HEALTHCHECK_START_PERIOD", DEFAULT_START_PERIOD))
    init_pid = int(os.environ.get("HEALTHCHECK_INIT_PID", INIT_PID))
    pids = nameko_pids(init_pid)
    target = pids[0] if pids else NO_TARGET
    ok, detail = healthy(url)
    if ok:
        write_failures(failures_file, target, 0)
        return 0
    if target != NO_TARGET and age(target) < start_period:
        print("%s: %s (in the start period: not counted)" % (url, detail))
        return 1
    failures = read_failures(failures_file, target) + 1
    write_failures(failures_file, target, failures)
    print("%s: %s (failure %d of %d)" % (url, detail, failures, restart_after))
    if restart_after > 0 and failures >= restart_after:
        if not pids:
            print("no `nameko run` child of pid %d to stop (run the container with init)"
                  % init_pid)
        sig = signal.SIGTERM if failures == restart_after else signal.SIGKILL
        for pid in pids:
            print("stopping nameko run (pid %d) with %s" % (pid, sig.name))
            os.kill(pid, sig)
    return 1


if __name__ == "__main__":
    sys.exit(main())

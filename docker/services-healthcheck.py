"""The services container's health check: GET /health, and stop the services when it keeps failing.

Docker only marks a container unhealthy; plain compose never restarts it. So after
``HEALTHCHECK_RESTART_AFTER`` failed checks in a row this check ends the ``nameko run`` process
(SIGTERM, then SIGKILL at the next failure) and ``restart: unless-stopped`` starts a new one.
With ``init: true`` (compose) or ``docker run --init``, nameko is a child of Docker's init and
SIGKILL works; without it nameko is PID 1, which only SIGTERM reaches.

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


def read_failures(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def write_failures(path, count):
    with open(path, "w") as handle:
        handle.write(str(count))


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_pid(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def nameko_pids(init_pid):
    """The `nameko run` processes: init_pid itself, or its children under Docker's init."""
    if "nameko" in cmdline(init_pid):
        return [init_pid]
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and parent_pid(int(name)) == init_pid
            and "nameko" in cmdline(int(name))]


def main():
    url = health_url()
    failures_file = os.environ.get("HEALTHCHECK_FAILURES_FILE", FAILURES_FILE)
    restart_after = int(os.environ.get("HEALTHCHECK_RESTART_AFTER", DEFAULT_RESTART_AFTER))
    ok, detail = healthy(url)
    if ok:
        write_failures(failures_file, 0)
        return 0
    failures = read_failures(failures_file) + 1
    write_failures(failures_file, failures)
    print("%s: %s (failure %d of %d)" % (url, detail, failures, restart_after))
    if restart_after > 0 and failures >= restart_after:
        sig = signal.SIGTERM if failures == restart_after else signal.SIGKILL
        init_pid = int(os.environ.get("HEALTHCHECK_INIT_PID", INIT_PID))
        for pid in nameko_pids(init_pid):
            print("stopping nameko run (pid %d) with %s" % (pid, sig.name))
            os.kill(pid, sig)
    return 1


if __name__ == "__main__":
    sys.exit(main())

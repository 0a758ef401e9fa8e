"""Helpers shared by the benchmark phases: statistics, the broker's management API, /proc.

Standard library plus nameko only. Nothing here imports Odoo or eventlet-patches anything: the
in-process phases must measure the client the way Odoo runs it (plain threads, no monkey-patching).
"""

import os
import sys
import time
import urllib.error
import urllib.parse

from tools.harness.broker import api_request

# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------

def percentile(values, fraction):
    """Nearest-rank percentile of `values` (fraction in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, int(round(fraction * len(ordered) + 0.4999)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def summary(samples):
    """(median, p90, n) of a list of seconds, as milliseconds."""
    return median(samples) * 1000.0, percentile(samples, 0.90) * 1000.0, len(samples)


class Report:
    """Collects the printed lines so they can also be written to results/latest.txt."""

    def __init__(self):
        self.lines = []
        self.targets = []

    def line(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    def header(self, text):
        self.line("")
        self.line("== " + text)

    def timing(self, label, samples, unit_note=""):
        med, p90, n = summary(samples)
        self.line("  %-44s median %8.2f ms   p90 %8.2f ms   N=%d%s"
                  % (label, med, p90, n, unit_note))
        return med

    def ratio(self, text, value):
        self.line("  ratio  %-58s %6.2fx" % (text, value))

    def target(self, name, ok, detail):
        status = "PASS" if ok else ("MISS" if ok is False else "N/A ")
        self.targets.append((name, status, detail))
        return status

    def write(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("\n".join(self.lines) + "\n")


def interleaved(variants, rounds, per_round):
    """Run each variant `per_round` times per round, variants alternating round by round, so a
    burst of load from elsewhere on the machine hits all of them alike. Returns name -> samples.

    `variants` is a list of (name, callable); the callable does one operation.
    """
    samples = {name: [] for name, _ in variants}
    clock = time.perf_counter
    for round_no in range(rounds):
        order = variants if round_no % 2 == 0 else list(reversed(variants))
        for name, operation in order:
            bucket = samples[name]
            for _ in range(per_round):
                start = clock()
                operation()
                bucket.append(clock() - start)
    return samples


# ---------------------------------------------------------------------------------------------
# RabbitMQ management API
# ---------------------------------------------------------------------------------------------

class RabbitAdmin:
    def __init__(self, api_uri):
        self.api_uri = api_uri

    def request(self, method, path, body=None):
        return api_request(self.api_uri, path[len("/api/"):], method, body, timeout=30)

    def create_vhost(self, vhost, user="guest"):
        quoted = urllib.parse.quote(vhost, safe="")
        self.delete_vhost(vhost)
        self.request("PUT", "/api/vhosts/" + quoted, {})
        self.request("PUT", "/api/permissions/%s/%s" % (quoted, user),
                     {"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self, vhost):
        try:
            self.request("DELETE", "/api/vhosts/" + urllib.parse.quote(vhost, safe=""))
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise

    def queues(self, vhost):
        return self.request("GET", "/api/queues/%s?columns=name,consumers"
                            % urllib.parse.quote(vhost, safe="")) or []

    def connections(self, vhost):
        return [c for c in self.request("GET", "/api/connections?columns=name,vhost") or []
                if c.get("vhost") == vhost]

    def consumers(self, vhost, queue):
        try:
            info = self.request("GET", "/api/queues/%s/%s" % (
                urllib.parse.quote(vhost, safe=""), urllib.parse.quote(queue, safe="")))
        except urllib.error.HTTPError:
            return 0
        return info.get("consumers", 0) or 0


def vhost_uri(amqp_uri, vhost):
    """`amqp_uri` pointed at `vhost`."""
    parts = urllib.parse.urlsplit(amqp_uri)
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", ""))


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------

def rss_kib(pid):
    """Resident set size of `pid` in KiB, from /proc."""
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_rss_kib(pid):
    """RSS of `pid` plus its child processes (Odoo workers in prefork mode), in KiB."""
    total = rss_kib(pid)
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
            kids = [int(x) for x in handle.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        try:
            total += rss_kib(kid)
        except OSError:
            pass
    return total


def log(message, *args):
    print("[bench] " + (message % args if args else message), file=sys.stderr, flush=True)


def tcp_connections_to(pid, port):
    """How many established TCP connections process `pid` holds to remote `port` (from /proc:
    the socket inodes of its file descriptors, matched against /proc/net/tcp and tcp6)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                        count += 1
        except OSError:
            continue
    return count


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of `pid` so far, in seconds (from /proc/<pid>/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command name: state is fields[0]; utime and stime are stat fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def listening_pid(port):
    """The pid of the local process listening on TCP `port` (the broker), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    if not inodes:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                target = os.readlink(os.path.join(fd_dir, fd))
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None

#!/usr/bin/env python3
"""Bring up, find and stop what compute_bridge runs against: RabbitMQ, PostgreSQL and Odoo's source.

Standard library only, so it runs before the venv exists. ``make run`` and ``make test`` call it;
the fault tests import it to restart their own broker.

Every setting comes from the environment, with a default:

``AMQP_URI`` (``pyamqp://guest:guest@localhost:5672``)
    The broker. Used as is when something answers there; otherwise a private RabbitMQ node is
    started listening on that host and port, with its own data folder under ``.run/``.
``RABBIT_API_URI`` (``http://guest:guest@localhost:15672``)
    RabbitMQ's management API (nameko's ``rabbit_config`` fixture uses it). A private node
    enables the management plugin on that port.
``PGHOST`` / ``PGPORT`` / ``PGUSER`` / ``PGPASSWORD``
    An existing PostgreSQL to use. When ``PGHOST`` is unset, a private cluster runs in
    ``.run/pg`` on ``COMPUTE_BRIDGE_PG_PORT`` (5439) with the role ``odoo`` (as root, in the
    system's temporary folder instead, where the ``postgres`` user can reach it).
``ODOO_SRC``
    An Odoo 18.0 source tree. Else ``${XDG_CACHE_HOME:-~/.cache}/compute_bridge/odoo-18.0``;
    else it is downloaded there, unless ``COMPUTE_BRIDGE_NO_DOWNLOAD=1``.
``COMPUTE_BRIDGE_RUN_DIR`` (``<repo>/.run``)
    Where private nodes keep their data, logs and the state file ``stack.env``.

Command line::

    stack.py up broker postgres   # start what is missing; write .run/stack.env
    stack.py down                  # stop what this tool started
    stack.py odoo-src              # print the Odoo source folder, or nothing
    stack.py odoo-conf FILE [--http-port N] [--set KEY=VALUE ...]  # our Odoo configuration
    stack.py ensure-tools          # apt-get install docker-compose, gettext, chromium if missing
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_DIR = os.environ.get("COMPUTE_BRIDGE_RUN_DIR") or os.path.join(REPO, ".run")
STATE_FILE = os.path.join(RUN_DIR, "stack.env")

DEFAULT_AMQP_URI = "pyamqp://guest:guest@localhost:5672"
DEFAULT_RABBIT_API_URI = "http://guest:guest@localhost:15672"
DEFAULT_PG_PORT = 5439
PG_ROLE = "odoo"  # Odoo refuses to run as the "postgres" role
RABBIT_START_TIMEOUT = 120  # seconds; a cold node with the management plugin takes ~20 s
PG_START_TIMEOUT = 60
ODOO_SERIES = "18.0"
ODOO_DOWNLOAD_URL = "https://nightly.odoo.com/18.0/nightly/src/odoo_18.0.latest.tar.gz"
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


def log(message, *args):
    print("[stack] " + (message % args if args else message), file=sys.stderr, flush=True)


def port_open(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.3)
    return False


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


def is_root():
    return os.geteuid() == 0


# --------------------------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------------------------

class RabbitNode:
    """A private RabbitMQ node: own node name, data folder, epmd port and listeners.

    ``name`` keeps several nodes apart (the fault tests run one beside the main one).
    """

    def __init__(self, name="main", amqp_port=5672, api_port=15672, host="127.0.0.1"):
        self.name = name
        self.host = host
        self.amqp_port = int(amqp_port)
        self.api_port = int(api_port)
        self.base = os.path.join(RUN_DIR, "rabbitmq-" + name)
        # Distribution and epmd ports derived from the AMQP port, so two nodes never collide.
        self.dist_port = 20000 + self.amqp_port % 10000
        self.epmd_port = 30000 + self.amqp_port % 10000
        self.nodename = "cb_%s_%d@localhost" % (name, self.amqp_port)

    @property
    def amqp_uri(self):
        return "pyamqp://guest:guest@%s:%d" % (self.host, self.amqp_port)

    @property
    def api_uri(self):
        return "http://guest:guest@%s:%d" % (self.host, self.api_port)

    def env(self):
        env = dict(os.environ)
        env.update(
            HOME=self.base,  # the Erlang cookie lives in $HOME: keep it private too
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.base, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.base, "rabbitmq.conf"),
            RABBITMQ_PID_FILE=os.path.join(self.base, "pid"),
            RABBITMQ_USE_LONGNAME="false",
        )
        return env

    def ensure_installed(self):
        if os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")):
            return
        if not is_root() or not shutil.which("apt-get"):
            raise SystemExit(
                "RabbitMQ is not installed and nothing answers at AMQP_URI. "
                "Install it (sudo apt-get install rabbitmq-server) or point AMQP_URI at a broker."
            )
        log("installing rabbitmq-server with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
        # policy-rc.d answering 101 stops the package from starting the system-wide node:
        # we only want the binaries.
        policy = "/usr/sbin/policy-rc.d"
        had_policy = os.path.exists(policy)
        if not had_policy:
            with open(policy, "w") as handle:
                handle.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "rabbitmq-server"], check=True, env=env
            )
        finally:
            if not had_policy:
                os.unlink(policy)

    def running(self):
        return port_open(self.host, self.amqp_port) and port_open(self.host, self.api_port)

    def start(self):
        self.ensure_installed()
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        with open(os.path.join(self.base, "enabled_plugins"), "w") as handle:
            handle.write("[rabbitmq_management].\n")
        with open(os.path.join(self.base, "rabbitmq.conf"), "w") as handle:
            handle.write(
                "listeners.tcp.default = %s:%d\n"
                "management.tcp.port = %d\n"
                "management.tcp.ip = %s\n"
                # a throwaway node on a small disk must not block publishers
                "disk_free_limit.absolute = 50MB\n"
                % (self.host, self.amqp_port, self.api_port, self.host)
            )
        log("starting private RabbitMQ node %s on amqp :%d, management :%d",
            self.nodename, self.amqp_port, self.api_port)
        out = open(os.path.join(self.base, "log", "stdout.log"), "ab")
        subprocess.Popen(
            [os.path.join(RABBIT_BIN, "rabbitmq-server")],
            cwd=self.base, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.wait()

    def wait(self):
        deadline = time.monotonic() + RABBIT_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.running() and self._api_ready():
                log("RabbitMQ node %s is up", self.nodename)
                return
            time.sleep(0.5)
        raise SystemExit("RabbitMQ node %s did not start; see %s/log" % (self.nodename, self.base))

    def _api_ready(self):
        request = urllib.request.Request("http://%s:%d/api/overview" % (self.host, self.api_port))
        request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def ctl(self, *args, check=True, timeout=60):
        return subprocess.run(
            [os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(), cwd=self.base, check=check, timeout=timeout,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def stop(self, kill_epmd=True):
        log("stopping RabbitMQ node %s", self.nodename)
        pid_file = os.path.join(self.base, "pid")
        try:
            self.ctl("stop", pid_file, check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            with open(pid_file) as handle:
                os.kill(int(handle.read().strip()), 9)
        if kill_epmd:
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def rabbit_from_env():
    amqp = urllib.parse.urlsplit(os.environ.get("AMQP_URI") or DEFAULT_AMQP_URI)
    api = urllib.parse.urlsplit(os.environ.get("RABBIT_API_URI") or DEFAULT_RABBIT_API_URI)
    return amqp, api


def up_broker(state):
    amqp, api = rabbit_from_env()
    host, port = amqp.hostname or "localhost", amqp.port or 5672
    state["AMQP_URI"] = urllib.parse.urlunsplit(amqp)
    state["RABBIT_API_URI"] = urllib.parse.urlunsplit(api)
    if port_open(host, port):
        log("using the broker already answering at %s:%s", host, port)
        return
    if host not in ("localhost", "127.0.0.1"):
        raise SystemExit("nothing answers at AMQP_URI %s:%s" % (host, port))
    node = RabbitNode("main", amqp_port=port, api_port=api.port or 15672)
    node.start()
    state["COMPUTE_BRIDGE_OWNS_BROKER"] = node.name


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

class PostgresCluster:
    """A private PostgreSQL cluster in ``.run/pg``, run as the ``postgres`` system user when we
    are root (PostgreSQL refuses to run as root)."""

    def __init__(self, port=DEFAULT_PG_PORT):
        self.port = int(port)
        self.data = os.path.join(RUN_DIR, "pg")
        if is_root():
            # The server runs as the postgres user, who may not reach into the checkout (a clone
            # under `mktemp -d` is mode 0700): keep the cluster in the system's temporary folder,
            # one per run folder.
            digest = hashlib.sha1(RUN_DIR.encode()).hexdigest()[:10]
            self.data = os.path.join(tempfile.gettempdir(), "compute_bridge-pg-" + digest)

    @staticmethod
    def bindir():
        for candidate in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"):
            if os.path.exists(os.path.join(candidate, "initdb")):
                return candidate
        found = shutil.which("initdb")
        if found:
            return os.path.dirname(os.path.realpath(found))
        raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                         "apt-get install postgresql")

    def _run(self, args, **kwargs):
        if is_root():
            args = ["runuser", "-u", "postgres", "--", *args]
            kwargs.setdefault("cwd", "/")  # the postgres user may not enter our folder
        return subprocess.run(args, **kwargs)

    def start(self):
        bindir = self.bindir()
        os.makedirs(RUN_DIR, exist_ok=True)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            os.makedirs(self.data, exist_ok=True)
            if is_root():
                shutil.chown(self.data, "postgres", "postgres")
            log("initialising a private PostgreSQL cluster in %s", self.data)
            self._run([os.path.join(bindir, "initdb"), "-D", self.data, "-A", "trust",
                       "-U", "postgres", "-E", "UTF8", "--locale=C"],
                      check=True, stdout=subprocess.DEVNULL)
        if not port_open("127.0.0.1", self.port):
            log("starting PostgreSQL on 127.0.0.1:%d", self.port)
            self._run([os.path.join(bindir, "pg_ctl"), "-D", self.data, "-w", "-t",
                       str(PG_START_TIMEOUT), "-l", os.path.join(self.data, "server.log"),
                       "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c full_page_writes=off -c synchronous_commit=off"
                       % (self.port, self.data), "start"],
                      check=True, stdout=subprocess.DEVNULL)
        self._run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                   "postgres", "-qtAc",
                   "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='%s') THEN "
                   "CREATE ROLE %s LOGIN SUPERUSER; END IF; END$$;" % (PG_ROLE, PG_ROLE)],
                  check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
            return
        log("stopping PostgreSQL on :%d", self.port)
        self._run([os.path.join(self.bindir(), "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                   "stop"], check=False, stdout=subprocess.DEVNULL)


def up_postgres(state):
    if os.environ.get("PGHOST"):
        state["PGHOST"] = os.environ["PGHOST"]
        state["PGPORT"] = os.environ.get("PGPORT", "5432")
        state["PGUSER"] = os.environ.get("PGUSER", PG_ROLE)
        if os.environ.get("PGPASSWORD"):
            state["PGPASSWORD"] = os.environ["PGPASSWORD"]
        log("using PostgreSQL at %s:%s", state["PGHOST"], state["PGPORT"])
        return
    port = int(os.environ.get("COMPUTE_BRIDGE_PG_PORT") or DEFAULT_PG_PORT)
    state.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER=PG_ROLE)
    if port_open("127.0.0.1", port):
        log("using the PostgreSQL already answering at 127.0.0.1:%d", port)
        return
    PostgresCluster(port).start()
    state["COMPUTE_BRIDGE_OWNS_POSTGRES"] = str(port)


# --------------------------------------------------------------------------------------------
# Odoo source
# --------------------------------------------------------------------------------------------

def odoo_cache_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "compute_bridge", "odoo-" + ODOO_SERIES)


def is_odoo_tree(path):
    release = os.path.join(path, "odoo", "release.py")
    # Git checkouts have odoo-bin, nightly tarballs setup/odoo: both have the package, which
    # we run as "python -m odoo".
    if not (os.path.exists(os.path.join(path, "odoo", "__main__.py")) and os.path.exists(release)):
        return False
    with open(release) as handle:
        return "version_info = (18, 0," in handle.read().replace("  ", " ")


def find_odoo_src(download=True):
    """Return an Odoo 18.0 source folder, or None when none can be had here."""
    explicit = os.environ.get("ODOO_SRC")
    if explicit:
        return explicit if is_odoo_tree(explicit) else None
    cached = odoo_cache_dir()
    if is_odoo_tree(cached):
        return cached
    if not download or os.environ.get("COMPUTE_BRIDGE_NO_DOWNLOAD") == "1":
        return None
    log("downloading Odoo %s source to %s", ODOO_SERIES, cached)
    try:
        with urllib.request.urlopen(ODOO_DOWNLOAD_URL, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as error:
        log("Odoo download failed (%s)", error)
        return None
    partial = cached + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        archive.extractall(partial, filter="data")
        top = archive.getnames()[0].split("/")[0]
    os.replace(os.path.join(partial, top), cached)
    shutil.rmtree(partial, ignore_errors=True)
    return cached if is_odoo_tree(cached) else None


# --------------------------------------------------------------------------------------------
# Command-line tools some tests need
# --------------------------------------------------------------------------------------------

# command -> Debian package. Tests that need a missing one skip with a loud line, so failing to
# install one is reported here and is not an error.
TEST_TOOLS = {
    "docker-compose": "docker-compose",  # tests/unit/test_compose.py: `docker-compose config`
    "msgfmt": "gettext",  # checks the addon's .po files
    "chromium": "chromium",  # Odoo's browser (tour) tests
}


def ensure_apt_packages(packages):
    """Install the Debian ``packages`` with apt-get when we are root; return those missing after."""
    if not packages:
        return []
    if not is_root() or not shutil.which("apt-get"):
        log("not root or no apt-get: not installing %s", " ".join(packages))
        return list(packages)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    missing = []
    for package in packages:  # one at a time: one unavailable package must not stop the others
        log("installing %s with apt-get", package)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               package], check=False, env=env)
        if done.returncode != 0:
            missing.append(package)
    return missing


def ensure_tools():
    packages = [pkg for command, pkg in TEST_TOOLS.items() if not shutil.which(command)]
    for package in ensure_apt_packages(packages):
        log("!!! %s is still missing: the tests that need it will be skipped", package)


# --------------------------------------------------------------------------------------------
# Odoo configuration
# --------------------------------------------------------------------------------------------

def write_odoo_conf(path, http_port=None, extra=()):
    """Write the Odoo configuration every script of ours runs Odoo with: the repository root as
    the addons path (it is an addons folder), PostgreSQL from ``PG*``, data under the run folder.

    ``extra`` holds further ``key=value`` options (``db_name=compute_bridge``...).
    """
    options = [
        ("addons_path", REPO),
        ("data_dir", os.path.join(RUN_DIR, "odoo-data")),
        ("db_host", os.environ.get("PGHOST", "127.0.0.1")),
        ("db_port", os.environ.get("PGPORT", str(DEFAULT_PG_PORT))),
        ("db_user", os.environ.get("PGUSER", PG_ROLE)),
        ("db_password", os.environ.get("PGPASSWORD") or "False"),
        ("list_db", "False"),
        ("without_demo", "all"),
        ("log_level", "warn"),
    ]
    if http_port:
        options += [("http_port", str(http_port)), ("http_interface", "127.0.0.1"),
                    # the websocket (gevent) port must not collide with another of our servers
                    ("gevent_port", str(int(http_port) + 1))]
    for item in extra:
        key, _, value = item.partition("=")
        options = [(k, v) for k, v in options if k != key] + [(key, value)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("[options]\n")
        handle.writelines("%s = %s\n" % option for option in options)


# --------------------------------------------------------------------------------------------

def down(state):
    if state.get("COMPUTE_BRIDGE_OWNS_BROKER"):
        amqp, api = rabbit_from_env()
        amqp = urllib.parse.urlsplit(state.get("AMQP_URI", urllib.parse.urlunsplit(amqp)))
        api = urllib.parse.urlsplit(state.get("RABBIT_API_URI", urllib.parse.urlunsplit(api)))
        RabbitNode(state["COMPUTE_BRIDGE_OWNS_BROKER"], amqp.port or 5672,
                   api.port or 15672).stop()
    if state.get("COMPUTE_BRIDGE_OWNS_POSTGRES"):
        PostgresCluster(state["COMPUTE_BRIDGE_OWNS_POSTGRES"]).stop()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(STATE_FILE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start what is missing and write .run/stack.env")
    up.add_argument("parts", nargs="+", choices=["broker", "postgres"])
    sub.add_parser("down", help="stop what 'up' started")
    src = sub.add_parser("odoo-src", help="print the Odoo source folder (download if allowed)")
    src.add_argument("--no-download", action="store_true")
    sub.add_parser("state", help="print the state file as JSON")
    conf = sub.add_parser("odoo-conf", help="write an Odoo configuration file for this checkout")
    conf.add_argument("path")
    conf.add_argument("--http-port", type=int)
    conf.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                      help="a further option, or a default replaced (repeatable)")
    sub.add_parser("ensure-tools", help="apt-get install the test tools that are missing")
    args = parser.parse_args(argv)

    if args.command == "up":
        state = read_state()
        if "broker" in args.parts:
            up_broker(state)
        if "postgres" in args.parts:
            up_postgres(state)
        write_state(state)
    elif args.command == "down":
        down(read_state())
    elif args.command == "odoo-src":
        path = find_odoo_src(download=not args.no_download)
        if path:
            print(path)
    elif args.command == "odoo-conf":
        write_odoo_conf(args.path, args.http_port, args.extra)
    elif args.command == "state":
        print(json.dumps(read_state(), indent=2))
    elif args.command == "ensure-tools":
        ensure_tools()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PostgreSQL: the server named by ``PGHOST``, or a private cluster.

With ``PGHOST`` unset, a private cluster runs on ``COMPUTE_BRIDGE_PG_PORT`` (5439) with the role
``odoo``. A server already answering there is used only when that role can log in; otherwise,
unless the port was set explicitly, the cluster goes to a free port (a system PostgreSQL on 5432
is never touched either way).
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

from .common import RUN_DIR, HarnessError, free_port, is_root, log, port_open

DEFAULT_PG_PORT = 5439
DEFAULT_PGHOST_PORT = "5432"
PG_ROLE = "odoo"  # Odoo refuses to run as the "postgres" role
PG_START_TIMEOUT = 60
LOCAL = "127.0.0.1"
PRIVATE_PORTS = range(5450, 5500)  # where a private cluster goes when its port is taken


def bindir():
    for candidate in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    raise HarnessError("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                       "apt-get install postgresql")


def psql(sql, variables=None, host=LOCAL, port=DEFAULT_PG_PORT, user=PG_ROLE, password=None,
         dbname="postgres", check=True):
    """Run ``sql`` with psql; values go in as psql variables (``:'name'``), never pasted into the
    text. Returns psql's unaligned output, stripped."""
    args = ["psql", "-h", host, "-p", str(port), "-U", user, "-d", dbname, "-X", "-qtA",
            "-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        args += ["-v", "%s=%s" % (name, value)]
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = password
    done = subprocess.run(args, input=sql, env=env, text=True, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise HarnessError("psql on %s:%s failed: %s" % (host, port, done.stderr.strip()))
    return done.stdout.strip() if done.returncode == 0 else None


def role_can_log_in(port, host=LOCAL):
    return psql("SELECT 1", host=host, port=port, check=False) == "1"


class PostgresCluster:
    """A private PostgreSQL cluster in ``.run/<name>``, run as the ``postgres`` system user when
    we are root (PostgreSQL refuses to run as root)."""

    def __init__(self, port=DEFAULT_PG_PORT, data=None, name="pg", run_dir=RUN_DIR):
        self.port = int(port)
        self.data = data or os.path.join(run_dir, name)
        if is_root() and not data:
            # The server runs as the postgres user, who may not reach into the checkout (a clone
            # under `mktemp -d` is mode 0700): keep the cluster in the system's temporary folder,
            # one per run folder.
            digest = hashlib.sha1(run_dir.encode()).hexdigest()[:10]
            suffix = "" if name == "pg" else "-" + name
            self.data = os.path.join(tempfile.gettempdir(),
                                     "compute_bridge-pg-%s%s" % (digest, suffix))

    def is_ours(self):
        """True when this cluster's server is running, on our port."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return False
        return len(lines) > 3 and lines[3].strip() == str(self.port) and port_open(LOCAL,
                                                                                  self.port)

    def _run(self, args, **kwargs):
        if is_root():
            args = ["runuser", "-u", "postgres", "--", *args]
            kwargs.setdefault("cwd", "/")  # the postgres user may not enter our folder
        return subprocess.run(args, **kwargs)

    def start(self):
        os.makedirs(RUN_DIR, exist_ok=True)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            os.makedirs(self.data, exist_ok=True)
            if is_root():
                shutil.chown(self.data, "postgres", "postgres")
            log("initialising a private PostgreSQL cluster in %s", self.data)
            self._run([os.path.join(bindir(), "initdb"), "-D", self.data, "-A", "trust",
                       "-U", "postgres", "-E", "UTF8", "--locale=C"],
                      check=True, stdout=subprocess.DEVNULL)
        log("starting PostgreSQL on %s:%d", LOCAL, self.port)
        self._run([os.path.join(bindir(), "pg_ctl"), "-D", self.data, "-w", "-t",
                   str(PG_START_TIMEOUT), "-l", os.path.join(self.data, "server.log"),
                   "-o", "-p %d -k %s -c listen_addresses=%s -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off"
                   % (self.port, self.data, LOCAL), "start"],
                  check=True, stdout=subprocess.DEVNULL)
        psql("SELECT format('CREATE ROLE %I LOGIN SUPERUSER', :'role') "
             "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec",
             {"role": PG_ROLE}, port=self.port, user="postgres")

    def stop(self):
        if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
            return
        log("stopping PostgreSQL on :%d", self.port)
        self._run([os.path.join(bindir(), "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                   "stop"], check=False, stdout=subprocess.DEVNULL)


def up(state, environ=os.environ):
    """Find or start PostgreSQL; record PGHOST/PGPORT/PGUSER (and what we own) in ``state``."""
    if environ.get("PGHOST"):
        state.update(PGHOST=environ["PGHOST"], PGPORT=environ.get("PGPORT", DEFAULT_PGHOST_PORT),
                     PGUSER=environ.get("PGUSER", PG_ROLE))
        if environ.get("PGPASSWORD"):
            state["PGPASSWORD"] = environ["PGPASSWORD"]
        log("using PostgreSQL at %s:%s", state["PGHOST"], state["PGPORT"])
        return
    cluster = None
    if state.get("COMPUTE_BRIDGE_OWNS_POSTGRES"):  # started by an earlier `up` of this run
        cluster = PostgresCluster(state["COMPUTE_BRIDGE_OWNS_POSTGRES"],
                                  state.get("COMPUTE_BRIDGE_PG_DATA"))
    if cluster is None or not cluster.is_ours():
        port = int(environ.get("COMPUTE_BRIDGE_PG_PORT") or DEFAULT_PG_PORT)
        cluster = PostgresCluster(port)
        if port_open(LOCAL, port) and not cluster.is_ours():
            if role_can_log_in(port):
                log("using the PostgreSQL already answering at %s:%d", LOCAL, port)
                state.update(PGHOST=LOCAL, PGPORT=str(port), PGUSER=PG_ROLE)
                return
            why = "the PostgreSQL at %s:%d does not let the role %r in" % (LOCAL, port, PG_ROLE)
            if environ.get("COMPUTE_BRIDGE_PG_PORT"):
                raise HarnessError(why + " (COMPUTE_BRIDGE_PG_PORT): free that port, or set "
                                   "PGHOST/PGPORT/PGUSER to a server to use")
            log("%s: starting a private cluster on another port", why)
            cluster = PostgresCluster(free_port(candidates=PRIVATE_PORTS), name="pg-free")
        if not cluster.is_ours():
            cluster.start()
    state.update(PGHOST=LOCAL, PGPORT=str(cluster.port), PGUSER=PG_ROLE,
                 COMPUTE_BRIDGE_OWNS_POSTGRES=str(cluster.port),
                 COMPUTE_BRIDGE_PG_DATA=cluster.data)


def down(state):
    if state.get("COMPUTE_BRIDGE_OWNS_POSTGRES"):
        PostgresCluster(state["COMPUTE_BRIDGE_OWNS_POSTGRES"],
                        state.get("COMPUTE_BRIDGE_PG_DATA")).stop()

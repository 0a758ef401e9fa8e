"""Odoo: its source, the one writer of our Odoo configuration, and one Odoo server process.

Odoo is started through the source tree's own launcher script (``odoo-bin`` in a git checkout,
``setup/odoo`` in a release tarball), never as ``python -m odoo``: on SIGHUP, or when its
watchdog reloads it, Odoo re-executes ``sys.argv`` — a script path works, the path of
``odoo/__main__.py`` fails with "attempted relative import with no known parent package".
"""

import io
import os
import shutil
import tarfile
import urllib.error
import urllib.request

from . import postgres
from .common import REPO, RUN_DIR, HarnessError, log, wait_until
from .process import spawn, stop

ODOO_SERIES = "18.0"
ODOO_DOWNLOAD_URL = "https://nightly.odoo.com/18.0/nightly/src/odoo_18.0.latest.tar.gz"
LAUNCHERS = ("odoo-bin", os.path.join("setup", "odoo"))  # git checkout, release tarball
INSTALL_TIMEOUT = 900  # seconds: creating a database with the addon on two busy cores
START_TIMEOUT = 180
HEALTH_TIMEOUT = 3
DEFAULT_DATA_DIR = os.path.join(RUN_DIR, "odoo-data")


def venv_bin(name):
    venv = os.environ.get("VENV") or os.path.join(REPO, ".venv")
    return os.path.join(venv, "bin", name)


def odoo_cache_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "compute_bridge", "odoo-" + ODOO_SERIES)


def launcher(src):
    """The launcher script of the Odoo tree ``src``, or None."""
    for name in LAUNCHERS:
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    return None


def is_odoo_tree(path):
    release = os.path.join(path, "odoo", "release.py")
    if not (os.path.exists(release) and launcher(path)):
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


def write_odoo_conf(path, http_port=None, extra=()):
    """Write the Odoo configuration every script of ours runs Odoo with: the repository root as
    the addons path (it is an addons folder), PostgreSQL from ``PG*``, data under the run folder.

    ``extra`` holds further ``key=value`` options (``db_name=compute_bridge``...), replacing a
    default of the same key.
    """
    options = {
        "addons_path": REPO,
        "data_dir": DEFAULT_DATA_DIR,
        "db_host": os.environ.get("PGHOST", postgres.LOCAL),
        "db_port": os.environ.get("PGPORT", str(postgres.DEFAULT_PG_PORT)),
        "db_user": os.environ.get("PGUSER", postgres.PG_ROLE),
        "db_password": os.environ.get("PGPASSWORD") or "False",
        "list_db": "False",
        "without_demo": "all",
        "log_level": "warn",
    }
    if http_port:
        options.update(http_port=str(http_port), http_interface=postgres.LOCAL,
                       # the websocket (gevent) port must not collide with another server of ours
                       gevent_port=str(int(http_port) + 1))
    for item in extra:
        key, _, value = item.partition("=")
        options.pop(key, None)
        options[key] = value
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("[options]\n")
        handle.writelines("%s = %s\n" % option for option in options.items())


def odoo_env(odoo_src, env=None):
    """Our environment with the Odoo tree first on PYTHONPATH and the venv's ``bin`` first on
    PATH, plus ``env`` (None: removed). PATH matters on a reload: Odoo re-executes itself with
    ``python`` as ``argv[0]``, and Python finds its venv from the ``python`` on PATH."""
    merged = dict(os.environ)
    merged["PYTHONPATH"] = odoo_src + (":" + merged["PYTHONPATH"]
                                       if merged.get("PYTHONPATH") else "")
    merged["PATH"] = os.path.dirname(venv_bin("python")) + os.pathsep + merged.get("PATH", "")
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class OdooServer:
    """One Odoo server process on database ``db``, configured by ``conf`` (written by
    :func:`write_odoo_conf`), listening on ``http_port``.

    ``output``: a log file path, or None for our own output. ``env``: extra environment.
    ``data_dir``: the configuration's data_dir (where a dropped database's files go too).
    """

    def __init__(self, odoo_src, conf, db, http_port, output=None, env=None,
                 data_dir=DEFAULT_DATA_DIR):
        self.odoo_src = odoo_src
        self.conf = conf
        self.db = db
        self.http_port = int(http_port)
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.output = output
        self.env = dict(env or {})
        self.data_dir = data_dir
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self, *args):
        return [venv_bin("python"), launcher(self.odoo_src), "-c", self.conf, *args]

    def run(self, *args, output=None, timeout=INSTALL_TIMEOUT):
        """Run Odoo once (``-i``/``-u``... ``--stop-after-init``); raise if it fails."""
        proc = spawn(self.command("-d", self.db, *args, "--stop-after-init"), output,
                     odoo_env(self.odoo_src, self.env), REPO)
        try:
            code = proc.wait(timeout)
        finally:
            stop(proc)
        if code != 0:
            tail = ""
            if output:
                with open(output, errors="replace") as handle:
                    tail = ":\n" + handle.read()[-4000:]
            raise HarnessError("Odoo %s on database %s failed (exit %s)%s"
                               % (" ".join(args), self.db, code, tail))

    def db_exists(self):
        return postgres.psql("SELECT 1 FROM pg_database WHERE datname = :'db'", {"db": self.db},
                             **pg_settings()) == "1"

    def drop_db(self):
        postgres.psql('DROP DATABASE IF EXISTS :"db" WITH (FORCE)', {"db": self.db},
                      **pg_settings())
        shutil.rmtree(os.path.join(self.data_dir, "filestore", self.db),
                      ignore_errors=True)

    def start(self, *args, timeout=START_TIMEOUT):
        """Start the server and wait until it answers ``/web/health``."""
        self.proc = spawn(self.command("-d", self.db, *args), self.output,
                          odoo_env(self.odoo_src, self.env), REPO)
        try:
            wait_until(lambda: self.proc.poll() is not None or self.answers(), timeout,
                       interval=0.5, what="Odoo answering at %s" % self.url)
        except TimeoutError:
            self.stop()
            raise HarnessError("Odoo did not answer at %s within %ss" % (self.url, timeout)
                               ) from None
        if self.proc.poll() is not None:
            raise HarnessError("Odoo exited at start (exit %s)%s" % (
                self.proc.returncode, "; see " + self.output if self.output else ""))
        log("Odoo answers at %s (pid %d)", self.url, self.proc.pid)

    def answers(self):
        """True when the server answers ``/web/health``."""
        try:
            with urllib.request.urlopen(self.url + "/web/health",
                                        timeout=HEALTH_TIMEOUT) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self):
        stop(self.proc)


def pg_settings():
    """psql's connection settings from ``PG*`` (as :func:`write_odoo_conf` writes them)."""
    return {"host": os.environ.get("PGHOST", postgres.LOCAL),
            "port": os.environ.get("PGPORT", str(postgres.DEFAULT_PG_PORT)),
            "user": os.environ.get("PGUSER", postgres.PG_ROLE),
            "password": os.environ.get("PGPASSWORD")}

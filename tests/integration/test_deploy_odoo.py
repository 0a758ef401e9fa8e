"""The Odoo container's parts, run for real without Docker: docker/postgres-init/10-odoo-role.sh
against PostgreSQL, then docker/odoo-entrypoint.sh (init, upgrade, server) with the shipped
docker/odoo.conf and a real Odoo 18, connected as the role that script created.

Only the paths that exist in the image alone are overridden on Odoo's command line (the addons
path and the data folder); the entrypoint finds ``odoo`` and ``psql`` on PATH as in the image.
"""

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import warnings

import pytest
from odoo_stack import REPO, database_name, drop_database, odoo_src, postgres_env, psql

# passlib (Odoo's password hashing) warns on import that the crypt module is going away
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.context import CryptContext

ENTRYPOINT = os.path.join(REPO, "docker", "odoo-entrypoint.sh")
ROLE_SCRIPT = os.path.join(REPO, "docker", "postgres-init", "10-odoo-role.sh")
SHIPPED_CONF = os.path.join(REPO, "docker", "odoo.conf")
ODOO_TIMEOUT = 600  # seconds: installing the addon on 2 busy cores takes about a minute
QUICK_TIMEOUT = 60
CRON_XMLID = ("compute_bridge", "compute_service_instance_gc_cron")
ADMIN_PASSWD = "test-master-" + secrets.token_hex(8)
ADMIN_USER_PASSWORD = "test-admin-user-" + secrets.token_hex(8)
UPGRADE_COMMAND = "docker compose run --rm odoo-upgrade"
MODULE_STATE = "SELECT state FROM ir_module_module WHERE name = 'compute_bridge'"
CRON_INTERVAL = ("SELECT interval_number FROM ir_cron WHERE id = (SELECT res_id FROM ir_model_data"
                 " WHERE module = '%s' AND name = '%s')" % CRON_XMLID)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The database and role as the postgres image's first start makes them, and the env the
    entrypoint gets in docker-compose.yml (here with this machine's PostgreSQL)."""
    src = odoo_src()
    superuser = postgres_env()
    folder = tmp_path_factory.mktemp("deploy")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    odoo = bin_dir / "odoo"  # what the image's /usr/bin/odoo is: this Odoo, this Python
    odoo.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m odoo "$@"\n' % (src, sys.executable))
    odoo.chmod(0o755)
    # psql as the image has it, recording its command lines (`ps` shows them to the container)
    psql_log = folder / "psql-argv"
    wrapper = bin_dir / "psql"
    wrapper.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n'
                       % (psql_log, shutil.which("psql")))
    wrapper.chmod(0o755)
    database, role = database_name("deploy"), database_name("deploy_role")
    # quotes and a backslash: the init script must pass the password to SQL intact
    password = "it's a \"role\" \\ password " + secrets.token_hex(8)
    drop_database(superuser, database)
    psql(superuser, 'DROP ROLE IF EXISTS "%s"' % role)
    created = subprocess.run(
        [ROLE_SCRIPT], capture_output=True, text=True, timeout=QUICK_TIMEOUT, check=False,
        env=dict(os.environ, **superuser, PATH="%s:%s" % (bin_dir, os.environ["PATH"]),
                 POSTGRES_USER=superuser["PGUSER"], POSTGRES_DB="postgres",
                 ODOO_DB_USER=role, ODOO_DB_PASSWORD=password, ODOO_DB_NAME=database))
    assert created.returncode == 0, created.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ODOO_"))}
    env.update(PATH="%s:%s" % (bin_dir, os.environ["PATH"]), PGHOST=superuser["PGHOST"],
               PGPORT=superuser["PGPORT"], PGUSER=role, PGPASSWORD=password, PGDATABASE=database,
               ODOO_ADMIN_PASSWD=ADMIN_PASSWD, ODOO_ADMIN_USER_PASSWORD=ADMIN_USER_PASSWORD,
               ODOO_RC=SHIPPED_CONF,
               COMPUTE_BRIDGE_MANIFEST=os.path.join(REPO, "compute_bridge", "__manifest__.py"),
               ODOO_RUNTIME_RC=str(folder / "run" / "odoo.conf"))
    yield {"env": env, "superuser": superuser, "database": database, "role": role,
           "folder": folder, "role_script_psql_argv": psql_log.read_text()}
    drop_database(superuser, database)
    psql(superuser, 'DROP ROLE IF EXISTS "%s"' % role)


def entrypoint(deployment, *args, timeout=ODOO_TIMEOUT, **env):
    """docker/odoo-entrypoint.sh ARGS, with the image-only paths pointed at this checkout."""
    paths = ["--addons-path=%s" % REPO, "--data-dir=%s" % (deployment["folder"] / "data")]
    runs_odoo = not args or args[0] in ("odoo", "init", "upgrade")
    command = [ENTRYPOINT, *args, *(paths if runs_odoo else [])]
    return subprocess.run(command, env=dict(deployment["env"], **env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def query(deployment, sql):
    return psql(deployment["superuser"], sql, deployment["database"])


def admin_password_is(deployment, password):
    stored = query(deployment, "SELECT password FROM res_users WHERE login = 'admin'")
    return CryptContext(["pbkdf2_sha512", "plaintext"]).verify(password, stored)


def set_admin_password(deployment, password):
    hashed = CryptContext(["pbkdf2_sha512"]).hash(password)
    query(deployment, "UPDATE res_users SET password = '%s' WHERE login = 'admin'" % hashed)


def test_the_role_password_is_on_no_command_line(deployment):
    """`ps` in the db container shows psql's command line while the role script runs."""
    assert deployment["env"]["PGPASSWORD"] not in deployment["role_script_psql_argv"]


def test_odoo_role_is_not_a_superuser_and_owns_its_database(deployment):
    flags = psql(deployment["superuser"], "SELECT rolsuper, rolcreatedb, rolcreaterole FROM "
                 "pg_roles WHERE rolname = '%s'" % deployment["role"])
    assert flags == "f|f|f"
    owner = psql(deployment["superuser"], "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE "
                 "datname = '%s'" % deployment["database"])
    assert owner == deployment["role"]
    assert query(deployment, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'")


@pytest.mark.parametrize("command, secret", [("odoo", "ODOO_ADMIN_PASSWD"),
                                             ("init", "ODOO_ADMIN_PASSWD"),
                                             ("init", "ODOO_ADMIN_USER_PASSWORD")])
def test_no_secret_no_start(deployment, command, secret):
    """Before the install: the init step checks the admin user's password only when it has an
    addon to install."""
    result = entrypoint(deployment, command, timeout=QUICK_TIMEOUT, **{secret: ""})
    assert result.returncode != 0
    assert secret in result.stderr


def test_init_installs_the_addon_as_that_role(deployment):
    result = entrypoint(deployment, "init")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "installing compute_bridge" in result.stderr
    assert query(deployment, MODULE_STATE) == "installed"
    assert not re.search(r"^\S+ \S+ \d+ (ERROR|CRITICAL) ", result.stderr, re.M), (
        result.stderr[-5000:])
    # the admin user's password is the operator's, not "admin"
    assert admin_password_is(deployment, ADMIN_USER_PASSWORD)
    assert not admin_password_is(deployment, "admin")


def test_init_again_leaves_an_installed_addon_and_its_data_alone(deployment):
    """`-i` on an installed module would reload its data in init mode: an administrator's
    change to a noupdate record (the clean-up cron) would be undone."""
    query(deployment, "UPDATE ir_cron SET interval_number = 7 WHERE id = (SELECT res_id FROM "
          "ir_model_data WHERE module = '%s' AND name = '%s')" % CRON_XMLID)
    # the password step failed after the install (its `odoo shell` killed): admin/admin is left
    set_admin_password(deployment, "admin")
    result = entrypoint(deployment, "init")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "already installed" in result.stderr
    assert query(deployment, CRON_INTERVAL) == "7"
    assert admin_password_is(deployment, ADMIN_USER_PASSWORD), "init again repairs it"


def test_init_never_overwrites_a_password_the_administrator_chose(deployment):
    set_admin_password(deployment, "chosen-by-the-administrator")
    result = entrypoint(deployment, "init", ODOO_ADMIN_USER_PASSWORD="")
    assert result.returncode == 0, result.stderr[-5000:]
    assert admin_password_is(deployment, "chosen-by-the-administrator")


def test_the_server_refuses_a_database_of_another_version(deployment):
    """A new image started before `odoo-upgrade`: the database has the previous version."""
    installed = query(deployment, "SELECT latest_version FROM ir_module_module WHERE name = "
                      "'compute_bridge'")
    query(deployment, "UPDATE ir_module_module SET latest_version = '18.0.0.0.1' WHERE name = "
          "'compute_bridge'")
    try:
        result = entrypoint(deployment, "odoo", timeout=QUICK_TIMEOUT)
    finally:
        query(deployment, "UPDATE ir_module_module SET latest_version = '%s' WHERE name = "
              "'compute_bridge'" % installed)
    assert result.returncode != 0
    assert "18.0.0.0.1" in result.stderr and installed in result.stderr
    assert UPGRADE_COMMAND in result.stderr


def test_upgrade_updates_the_addon_and_keeps_noupdate_data(deployment):
    """From an interrupted upgrade, which the init step refuses and names this step for."""
    query(deployment, "UPDATE ir_module_module SET state = 'to upgrade' WHERE name = "
          "'compute_bridge'")
    refused = entrypoint(deployment, "init", timeout=QUICK_TIMEOUT)
    assert refused.returncode != 0 and UPGRADE_COMMAND in refused.stderr, refused.stderr
    result = entrypoint(deployment, "upgrade")
    assert result.returncode == 0, result.stderr[-5000:]
    assert re.search(r"odoo\.modules\.loading: updating modules list", result.stderr)
    assert query(deployment, MODULE_STATE) == "installed"
    assert query(deployment, CRON_INTERVAL) == "7"


@pytest.mark.parametrize("flag", ["-i", "--init=compute_bridge", "-u", "--update"])
def test_the_server_refuses_to_install_or_update(deployment, flag):
    result = entrypoint(deployment, "odoo", flag, "compute_bridge", timeout=QUICK_TIMEOUT)
    assert result.returncode != 0
    assert "init or upgrade step" in result.stderr


def test_shipped_conf_runs_a_real_odoo_server(deployment):
    """The shipped odoo.conf, with the secrets read from files (Docker secrets), starts Odoo's
    multi-process server on the test port, loads the database, and stops."""
    folder = deployment["folder"]
    (folder / "admin_passwd").write_text(ADMIN_PASSWD)
    (folder / "db_password").write_text(deployment["env"]["PGPASSWORD"])
    port = int(os.environ.get("COMPUTE_BRIDGE_TEST_HTTP_PORT", "8169"))
    result = entrypoint(
        deployment, "odoo", "--stop-after-init", "--http-interface=127.0.0.1",
        "--http-port=%d" % port, "--gevent-port=%d" % (port + 1),
        ODOO_ADMIN_PASSWD="", ODOO_ADMIN_PASSWD_FILE=str(folder / "admin_passwd"),
        PGPASSWORD="", PGPASSWORD_FILE=str(folder / "db_password"))
    assert result.returncode == 0, result.stderr[-5000:]
    assert "HTTP service (werkzeug) running on 127.0.0.1:%d" % port in result.stderr
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \d+ INFO %s odoo\.modules\.registry: "
                     r"Registry loaded" % deployment["database"], result.stderr, re.M), (
        "Odoo's log lines carry the time, the level and the database")

    runtime = deployment["env"]["ODOO_RUNTIME_RC"]
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o600, "the running config holds a secret"
    # Odoo's own parser, as the server read it
    read = subprocess.run(
        [sys.executable, "-c", (
            "import json, sys; import odoo; from odoo.tools import config;"
            "config.parse_config(['-c', sys.argv[1], '--addons-path', sys.argv[2]]);"
            "print(json.dumps({k: config[k] for k in sys.argv[3:]}))"),
         runtime, REPO, "list_db", "proxy_mode", "workers", "gevent_port", "http_port",
         "admin_passwd", "without_demo", "max_cron_threads", "limit_memory_soft",
         "limit_memory_hard", "limit_time_cpu", "limit_time_real", "limit_request", "db_password"],
        env=dict(os.environ, PYTHONPATH=odoo_src()), capture_output=True, text=True,
        timeout=QUICK_TIMEOUT, check=False)
    assert read.returncode == 0, read.stderr
    config = json.loads(read.stdout.strip().splitlines()[-1])
    assert config["list_db"] is False
    assert config["proxy_mode"] is True
    assert config["workers"] >= 2 and config["max_cron_threads"] >= 1
    assert (config["http_port"], config["gevent_port"]) == (8069, 8072)
    assert config["admin_passwd"] == ADMIN_PASSWD
    assert config["db_password"] in (False, None, ""), "libpq reads PGPASSWORD instead"
    assert config["without_demo"] in ("all", "True", True)
    for limit in ("limit_memory_soft", "limit_memory_hard", "limit_time_cpu", "limit_time_real",
                  "limit_request"):
        assert config[limit] > 0, limit
    with open(SHIPPED_CONF) as handle:
        assert ADMIN_PASSWD not in handle.read()

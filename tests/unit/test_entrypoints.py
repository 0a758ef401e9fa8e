"""docker/odoo-entrypoint.sh and docker/services-entrypoint.sh run by a real shell, with fake
``odoo`` and ``psql`` on PATH: the fake psql answers the module's state and version as a database
would, the fake odoo records how it was called. tests/integration/test_deploy_odoo.py runs the
same entrypoint against a real Odoo and PostgreSQL.
"""

import ast
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ODOO_ENTRYPOINT = os.path.join(REPO, "docker", "odoo-entrypoint.sh")
SERVICES_ENTRYPOINT = os.path.join(REPO, "docker", "services-entrypoint.sh")
MANIFEST = os.path.join(REPO, "compute_bridge", "__manifest__.py")
TIMEOUT = 30  # seconds
BROKER_URL = "pyamqp://compute_bridge:%s@rabbitmq:5672/compute_bridge"
UPGRADE_COMMAND = "docker compose run --rm odoo-upgrade"

FAKE_PSQL = """#!/bin/sh
for arg; do query=$arg; done
case "$query" in
    *to_regclass*) [ -n "$FAKE_STATE" ] && echo t || echo f ;;
    *latest_version*) [ -n "$FAKE_STATE" ] && echo "$FAKE_VERSION|$FAKE_STATE" ;;
    *state*) echo "$FAKE_STATE" ;;
esac
"""
FAKE_ODOO = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
[ "$1" = shell ] && cat > /dev/null
exit 0
"""


def manifest_version():
    with open(MANIFEST) as handle:
        return ast.literal_eval(handle.read())["version"]


@pytest.fixture
def run(tmp_path):
    """run(*args, state="installed", version=<manifest>, **env) -> (result, odoo calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("psql", FAKE_PSQL), ("odoo", FAKE_ODOO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "odoo.log"

    def run_entrypoint(*args, state="installed", version=None, **env):
        log.write_text("")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ODOO_"))}
        base.update(
            PATH="%s:%s" % (bin_dir, os.environ["PATH"]), PGDATABASE="cb", PGPASSWORD="pg-secret",
            ODOO_ADMIN_PASSWD="master-secret", ODOO_ADMIN_USER_PASSWORD="admin-secret",
            ODOO_RC=os.path.join(REPO, "docker", "odoo.conf"),
            ODOO_RUNTIME_RC=str(tmp_path / "run" / "odoo.conf"), COMPUTE_BRIDGE_MANIFEST=MANIFEST,
            COMPUTE_BRIDGE_BROKER_URL=BROKER_URL % "abc123", FAKE_STATE=state,
            FAKE_VERSION=version or manifest_version(), FAKE_LOG=str(log))
        base.update(env)
        result = subprocess.run([ODOO_ENTRYPOINT, *args], env=base, capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)
        return result, log.read_text().splitlines()

    return run_entrypoint


def one_error_line(result):
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("state", ["", "uninstalled"])
def test_init_installs_an_absent_or_uninstalled_module(run, state):
    result, calls = run("init", state=state)
    assert result.returncode == 0, result.stderr
    assert "--init compute_bridge" in calls[0]
    assert calls[1].startswith("shell "), calls


@pytest.mark.parametrize("state", ["to upgrade", "to install", "to remove"])
def test_init_stops_on_an_interrupted_state(run, state):
    result, calls = run("init", state=state)
    line = one_error_line(result)
    assert state in line and UPGRADE_COMMAND in line
    assert calls == [], "nothing may run on a half-installed module"


def test_init_on_an_installed_module_only_checks_the_admin_password(run):
    """The password step runs on every init: one that failed after the install is repaired."""
    result, calls = run("init")
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1 and calls[0].startswith("shell "), calls


def test_the_server_refuses_a_database_of_another_version(run):
    result, calls = run("odoo", version="18.0.0.9.0")
    line = one_error_line(result)
    assert "18.0.0.9.0" in line and manifest_version() in line and UPGRADE_COMMAND in line
    assert calls == []


def test_the_server_starts_on_its_own_version(run):
    result, calls = run("odoo")
    assert result.returncode == 0, result.stderr
    assert calls and calls[0].startswith("--config")


@pytest.mark.parametrize("value", ["x\nlist_db = True", "x\rlist_db = True"])
@pytest.mark.parametrize("name", ["ODOO_ADMIN_PASSWD", "PGPASSWORD",
                                  "COMPUTE_BRIDGE_HEARTBEAT_SECRET"])
def test_a_secret_with_a_line_break_is_refused(run, tmp_path, name, value):
    result, calls = run("odoo", **{name: value})
    assert name in one_error_line(result)
    assert calls == []
    runtime = tmp_path / "run" / "odoo.conf"
    assert not runtime.exists() or "list_db = True" not in runtime.read_text()


def test_a_secret_file_loses_one_trailing_newline(run, tmp_path):
    secret = tmp_path / "admin_passwd"
    secret.write_text("from-a-file\n")
    result, _ = run("odoo", ODOO_ADMIN_PASSWD="", ODOO_ADMIN_PASSWD_FILE=str(secret))
    assert result.returncode == 0, result.stderr
    assert "admin_passwd = from-a-file\n" in (tmp_path / "run" / "odoo.conf").read_text()


@pytest.mark.parametrize("content", [b"x\nlist_db = True\n", b"x\n\n", b"x\0y\n"])
def test_a_secret_file_with_inner_line_breaks_or_nul_is_refused(run, tmp_path, content):
    secret = tmp_path / "admin_passwd"
    secret.write_bytes(content)
    result, calls = run("odoo", ODOO_ADMIN_PASSWD="", ODOO_ADMIN_PASSWD_FILE=str(secret))
    assert "ODOO_ADMIN_PASSWD" in one_error_line(result)
    assert calls == []


URL_UNSAFE = ["a/b", "a+b", "a=b", "a@b", "a:b", "a#b", "a?b", "a%2Fb"]


@pytest.mark.parametrize("password", URL_UNSAFE)
def test_odoo_refuses_a_broker_password_that_is_not_url_safe(run, password):
    result, calls = run("odoo", COMPUTE_BRIDGE_BROKER_URL=BROKER_URL % password)
    assert "RABBITMQ_PASSWORD must be URL-safe (use openssl rand -hex 32)" in one_error_line(result)
    assert calls == []


@pytest.mark.parametrize("password", URL_UNSAFE)
def test_services_refuse_a_broker_password_that_is_not_url_safe(password):
    result = subprocess.run([SERVICES_ENTRYPOINT, "echo", "started"], capture_output=True,
                            text=True, timeout=TIMEOUT, check=False,
                            env=dict(os.environ, AMQP_URI=BROKER_URL % password))
    assert "RABBITMQ_PASSWORD must be URL-safe (use openssl rand -hex 32)" in one_error_line(result)
    assert "started" not in result.stdout


def test_services_start_with_a_url_safe_password():
    result = subprocess.run([SERVICES_ENTRYPOINT, "echo", "started"], capture_output=True,
                            text=True, timeout=TIMEOUT, check=False,
                            env=dict(os.environ, AMQP_URI=BROKER_URL % "0123abcdef-_.~"))
    assert result.returncode == 0 and result.stdout == "started\n", result.stderr

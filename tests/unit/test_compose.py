"""The Docker set-up, checked without a Docker engine.

``docker-compose config`` validates ``docker-compose.yml`` and prints it resolved (variables
substituted, paths made absolute); the wiring is then read from that output: which broker Odoo is
given, how the addon reaches Odoo's addons path, what the services run. Nothing is built or started.
"""

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
COMPOSE_TIMEOUT = 60  # seconds; `config` only parses, it never talks to an engine


def compose_command():
    """``docker-compose`` (1.x, Debian's package) or the ``docker compose`` v2 plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose():
    command = compose_command()
    if command is None:
        pytest.skip(
            "!!! docker-compose NOT INSTALLED: docker-compose.yml is not checked. "
            "`python3 tools/stack.py ensure-tools` (as root) or `apt-get install docker-compose` "
            "installs it. !!!"
        )
    env = dict(os.environ)
    # The file's own defaults must be what is checked, not this shell's overrides.
    for name in ("HEARTBEAT_INTERVAL", "HEARTBEAT_SECRET"):
        env.pop(name, None)
    result = subprocess.run(
        [*command, "-f", COMPOSE_FILE, "config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT, check=False,
    )
    assert result.returncode == 0, "docker-compose config failed:\n" + result.stderr
    return yaml.safe_load(result.stdout)


def as_list(command):
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.partition("=")[::2] for item in env)
    return env


def from_image(dockerfile):
    with open(os.path.join(REPO, dockerfile)) as handle:
        froms = [line.split()[1] for line in handle
                 if line.strip().upper().startswith("FROM ")]
    assert froms, "%s has no FROM line" % dockerfile
    return froms


def test_config_is_valid():
    command = compose_command()
    if command is None:
        pytest.skip("!!! docker-compose NOT INSTALLED: docker-compose.yml is not checked. !!!")
    subprocess.run([*command, "-f", COMPOSE_FILE, "config", "-q"], cwd=REPO, check=True,
                   timeout=COMPOSE_TIMEOUT)


def test_services_present(compose):
    assert set(compose["services"]) >= {"db", "rabbitmq", "services", "odoo"}


def test_database(compose):
    db = compose["services"]["db"]
    assert db["image"].startswith("postgres:15")
    env = environment(db)
    assert env["POSTGRES_USER"] == "odoo"
    assert env["POSTGRES_PASSWORD"] == "odoo"
    assert "pg_isready" in " ".join(as_list(db["healthcheck"]["test"]))
    assert any(str(v).endswith("/var/lib/postgresql/data") or ":/var/lib/postgresql/data" in str(v)
               for v in db.get("volumes", []))


def test_rabbitmq(compose):
    rabbit = compose["services"]["rabbitmq"]
    assert rabbit["image"] == "rabbitmq:3-management"
    assert "rabbitmq-diagnostics -q ping" in " ".join(as_list(rabbit["healthcheck"]["test"]))
    targets = {int(port["target"]) if isinstance(port, dict) else int(str(port).split(":")[-1])
               for port in rabbit.get("ports", [])}
    assert {5672, 15672} <= targets


def test_odoo_gets_the_broker_of_the_rabbitmq_service(compose):
    url = environment(compose["services"]["odoo"])["COMPUTE_BRIDGE_BROKER_URL"]
    assert re.fullmatch(r"pyamqp://guest:guest@rabbitmq(:5672)?/?", url), url


def test_odoo_is_odoo_18_with_nameko():
    with open(COMPOSE_FILE) as handle:  # unresolved: `build` as written
        odoo = yaml.safe_load(handle)["services"]["odoo"]
    if "image" in odoo and "build" not in odoo:
        assert odoo["image"] == "odoo:18"
        return
    dockerfile = odoo["build"]["dockerfile"]
    assert from_image(dockerfile)[0] == "odoo:18"
    with open(os.path.join(REPO, dockerfile)) as handle:
        text = handle.read()
    assert "services/requirements.txt" in text, "the Odoo image must get nameko's pinned deps"


def test_odoo_mounts_the_repository_as_an_addons_folder(compose):
    odoo = compose["services"]["odoo"]
    command = as_list(odoo["command"])
    mounts = {}
    for volume in odoo["volumes"]:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    repo_targets = [t for t, s in mounts.items() if os.path.realpath(s) == os.path.realpath(REPO)]
    assert repo_targets, "the repository is not mounted into the odoo container: %s" % mounts
    addons_path = [arg.split("=", 1)[1] for arg in command if arg.startswith("--addons-path=")]
    if addons_path:
        assert repo_targets[0] in addons_path[0].split(",")
    else:  # the image's default addons path
        assert repo_targets[0] == "/mnt/extra-addons"
    assert os.path.isfile(os.path.join(REPO, "compute_bridge", "__manifest__.py")), (
        "the mounted folder must contain the addon: compute_bridge/__manifest__.py")


def test_odoo_initialises_the_database_with_the_addon(compose):
    odoo = compose["services"]["odoo"]
    command = " ".join(as_list(odoo["command"]))
    assert re.search(r"(^|\s)-i[ =]compute_bridge\b", command), command
    assert re.search(r"(^|\s)-d[ =]\w+", command), command
    targets = [int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1])
               for p in odoo["ports"]]
    assert 8069 in targets
    depends = odoo["depends_on"]
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["rabbitmq"]["condition"] == "service_healthy"


def test_services_run_with_nameko_against_the_rabbitmq_service(compose):
    services = compose["services"]["services"]
    command = as_list(services["command"])
    assert command[:3] == ["nameko", "run", "--config"], command
    assert os.path.isfile(os.path.join(REPO, command[3])), "missing %s" % command[3]
    env = environment(services)
    assert re.fullmatch(r"pyamqp://guest:guest@rabbitmq(:5672)?/?", env["AMQP_URI"])
    assert env["HEARTBEAT_URL"] == "http://odoo:8069/compute_bridge/heartbeat"
    assert env["HEARTBEAT_INTERVAL"] == "30"
    assert env["HEARTBEAT_SECRET"], "HEARTBEAT_SECRET needs a default"
    assert services["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_services_and_odoo_share_the_heartbeat_secret(compose):
    services = environment(compose["services"]["services"])
    odoo = environment(compose["services"]["odoo"])
    assert odoo["COMPUTE_BRIDGE_HEARTBEAT_SECRET"] == services["HEARTBEAT_SECRET"]


def test_services_can_be_scaled(compose):
    services = compose["services"]["services"]
    assert "container_name" not in services, "a fixed name forbids --scale services=N"
    assert not services.get("ports"), "a host port forbids --scale services=N"


def test_services_image_is_built_from_an_official_python_image(compose):
    build = compose["services"]["services"]["build"]
    assert os.path.realpath(build["context"]) == os.path.realpath(REPO)
    assert build["dockerfile"] == "services/Dockerfile"
    assert os.path.isfile(os.path.join(REPO, "services", "Dockerfile")), "services/Dockerfile"
    base = from_image("services/Dockerfile")[-1]
    assert re.fullmatch(r"(docker\.io/)?(library/)?python:[\w.-]+", base), base


def test_named_volumes(compose):
    assert {"db-data", "odoo-data"} <= set(compose.get("volumes") or {})


def test_build_context_leaves_the_venv_out():
    with open(os.path.join(REPO, ".dockerignore")) as handle:
        ignored = {line.strip().strip("/") for line in handle if not line.startswith("#")}
    assert {".venv", ".run", ".git"} <= ignored

"""The Docker set-up, checked without a Docker engine.

``docker-compose config`` validates ``docker-compose.yml``, substitutes the variables and prints the
result: that it refuses to run without each secret, and the wiring read from its output (which
broker and database Odoo is given, what is published, what the services run) are checked here.
The Dockerfiles, ``docker/odoo.conf`` and the ignore files are read as text. Nothing is built or
started; tests/integration/test_deploy_odoo.py runs the entrypoint and odoo.conf with a real Odoo.
"""

import ast
import configparser
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
DEV_COMPOSE_FILE = os.path.join(REPO, "docker-compose.dev.yml")
ODOO_CONF = os.path.join(REPO, "docker", "odoo.conf")
DOCKERFILES = ("docker/odoo.Dockerfile", "services/Dockerfile")
COMPOSE_TIMEOUT = 60  # seconds; `config` only parses, it never talks to an engine
LOOPBACK = "127.0.0.1"

# What an operator must set: each one has no default in the compose file.
SECRETS = {
    "POSTGRES_PASSWORD": "test-postgres-superuser-password",
    "ODOO_DB_PASSWORD": "test-odoo-role-password",
    "ODOO_ADMIN_PASSWD": "test-odoo-master-password",
    "RABBITMQ_PASSWORD": "test-broker-password",
    "HEARTBEAT_SECRET": "test-heartbeat-secret",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-admin-password",
}
# Read by the init step only, while Odoo's admin user still has the password "admin" (the
# entrypoint refuses to install without it): not required by compose.
INIT_SECRET = {"ODOO_ADMIN_USER_PASSWORD": "test-odoo-admin-user-password"}
# Every variable the file reads: a developer's shell must not change what is checked.
OPTIONAL = ("ODOO_ADMIN_USER_PASSWORD", "ODOO_DB_USER", "ODOO_DB_NAME", "RABBITMQ_USER",
            "RABBITMQ_VHOST", "HEARTBEAT_INTERVAL", "COMPUTE_BRIDGE_VERSION",
            "COMPUTE_BRIDGE_METRICS_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT")
# What is published on the host, on 127.0.0.1 only: Odoo, and the monitoring profile's Grafana.
PUBLISHED = {"odoo": {8069, 8072}, "grafana": {3000}}


def compose_command():
    """``docker-compose`` (1.x, Debian's package) or the ``docker compose`` v2 plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def run_config(tmp_path, variables, *files):
    """``docker-compose config`` with exactly ``variables`` (written to an env file)."""
    command = compose_command()
    if command is None:
        pytest.skip(
            "!!! docker-compose NOT INSTALLED: docker-compose.yml is not checked. "
            "`python3 tools/stack.py ensure-tools` (as root) or `apt-get install docker-compose` "
            "installs it. !!!"
        )
    env_file = tmp_path / "test.env"
    env_file.write_text("".join("%s=%s\n" % item for item in variables.items()))
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and k not in OPTIONAL}
    file_args = [arg for path in (files or (COMPOSE_FILE,)) for arg in ("-f", path)]
    return subprocess.run(
        [*command, "--env-file", str(env_file), *file_args, "config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT, check=False,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    result = run_config(tmp_path_factory.mktemp("compose"), dict(SECRETS, **INIT_SECRET))
    assert result.returncode == 0, "docker-compose config failed:\n" + result.stderr
    return yaml.safe_load(result.stdout)


def as_list(command):
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.partition("=")[::2] for item in env)
    return env


def published(service):
    """(host_ip, published, target) for each published port, short or long syntax."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published", "")),
                          int(port["target"])))
            continue
        spec = str(port).split("/")[0]
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        ports.append((host_ip, parts[-2] if len(parts) > 1 else "", int(parts[-1])))
    return ports


def mounts(service):
    """{target: source} of the service's volumes."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            found[target] = source
    return found


def manifest_version():
    with open(os.path.join(REPO, "compute_bridge", "__manifest__.py")) as handle:
        return ast.literal_eval(handle.read())["version"]


def dockerfile_instructions(dockerfile):
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    with open(os.path.join(REPO, dockerfile)) as handle:
        text = handle.read()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


# --------------------------------------------------------------------------------------------
# Secrets: none in the file, each one required
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_refuses_to_run_without_each_secret(tmp_path, missing):
    variables = {k: v for k, v in SECRETS.items() if k != missing}
    result = run_config(tmp_path, variables)
    assert result.returncode != 0, "%s has a default in docker-compose.yml" % missing
    assert missing in result.stderr, result.stderr


@pytest.mark.parametrize("empty", sorted(SECRETS))
def test_refuses_an_empty_secret(tmp_path, empty):
    """`.env.example` copied but not filled in must not start either (`${VAR:?}`, not `?`)."""
    result = run_config(tmp_path, dict(SECRETS, **{empty: ""}))
    assert result.returncode != 0
    assert empty in result.stderr, result.stderr


def test_every_secret_in_the_containers_comes_from_the_operator(compose):
    """Each password-like variable a container gets holds one of the operator's values."""
    values = set(SECRETS.values()) | set(INIT_SECRET.values())
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if re.search(r"PASS|SECRET|PASSWD|BROKER_URL|AMQP_URI", key):
                assert any(secret in str(value) for secret in values), (name, key, value)


def test_no_secret_is_written_in_the_compose_files():
    for path in (COMPOSE_FILE, DEV_COMPOSE_FILE):
        with open(path) as handle:
            text = handle.read()
        assert not re.search(r"guest[:@]", text), "%s uses RabbitMQ's guest user" % path
        for match in re.finditer(r"\$\{(\w+)(:?[-?])?", text):
            if match.group(1) in SECRETS:
                assert match.group(2) == ":?", "%s: ${%s} needs :? (no default)" % (
                    path, match.group(1))


def test_dotenv_is_never_committed_nor_sent_to_a_build():
    for ignore_file in (".gitignore", ".dockerignore"):
        with open(os.path.join(REPO, ignore_file)) as handle:
            assert ".env" in {line.strip() for line in handle}, ignore_file


def test_the_example_env_file_lists_every_secret_empty():
    with open(os.path.join(REPO, ".env.example")) as handle:
        assignments = dict(line.strip().split("=", 1) for line in handle
                           if "=" in line and not line.startswith("#"))
    assert {name: "" for name in {**SECRETS, **INIT_SECRET}} == assignments


# --------------------------------------------------------------------------------------------
# What is reachable from outside
# --------------------------------------------------------------------------------------------

def test_services_present(compose):
    assert set(compose["services"]) >= {"db", "rabbitmq", "services", "odoo-init", "odoo"}


def test_only_odoo_is_published_and_on_loopback_only(compose):
    for name, service in compose["services"].items():
        ports = published(service)
        assert {target for _, _, target in ports} == PUBLISHED.get(name, set()), (name, ports)
        for host_ip, _, _ in ports:
            assert host_ip == LOOPBACK, "%s is published on every interface: %s" % (name, ports)


def test_development_override_publishes_broker_and_database_on_loopback(tmp_path):
    assert not os.path.exists(os.path.join(REPO, "docker-compose.override.yml")), (
        "compose loads docker-compose.override.yml by itself: development ports would ship")
    result = run_config(tmp_path, SECRETS, COMPOSE_FILE, DEV_COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {t for _, _, t in published(services["rabbitmq"])} == {5672, 15672}
    assert {t for _, _, t in published(services["db"])} == {5432}
    for name, service in services.items():
        for host_ip, _, _ in published(service):
            assert host_ip == LOOPBACK, (name, published(service))


# --------------------------------------------------------------------------------------------
# Broker and database
# --------------------------------------------------------------------------------------------

def test_broker_has_its_own_user_and_virtual_host(compose):
    rabbit = environment(compose["services"]["rabbitmq"])
    user, password, vhost = (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"],
                             rabbit["RABBITMQ_DEFAULT_VHOST"])
    assert user != "guest" and vhost not in ("", "/")
    assert password == SECRETS["RABBITMQ_PASSWORD"]
    expected = "pyamqp://%s:%s@rabbitmq:5672/%s" % (user, password, vhost)
    assert environment(compose["services"]["services"])["AMQP_URI"] == expected
    for name in ("odoo", "odoo-init"):
        assert environment(compose["services"][name])["COMPUTE_BRIDGE_BROKER_URL"] == expected


def test_broker_and_database_keep_their_data_in_volumes(compose):
    volumes = set(compose.get("volumes") or {})
    for name, target in (("rabbitmq", "/var/lib/rabbitmq"), ("db", "/var/lib/postgresql/data"),
                         ("odoo", "/var/lib/odoo")):
        assert mounts(compose["services"][name]).get(target) in volumes, (name, target)


def test_rabbitmq(compose):
    rabbit = compose["services"]["rabbitmq"]
    assert "rabbitmq-diagnostics -q ping" in " ".join(as_list(rabbit["healthcheck"]["test"]))
    assert rabbit["hostname"] == "rabbitmq", "the node name, and so its data, follows it"


def test_odoo_connects_as_a_role_of_its_own_created_by_the_init_script(compose):
    db = compose["services"]["db"]
    db_env = environment(db)
    odoo_env = environment(compose["services"]["odoo"])
    assert odoo_env["PGUSER"] not in ("postgres", db_env.get("POSTGRES_USER", "postgres"))
    assert odoo_env["PGUSER"] == db_env["ODOO_DB_USER"]
    assert odoo_env["PGDATABASE"] == db_env["ODOO_DB_NAME"]
    assert odoo_env["PGPASSWORD"] == db_env["ODOO_DB_PASSWORD"] == SECRETS["ODOO_DB_PASSWORD"]
    init_dir = mounts(db)["/docker-entrypoint-initdb.d"]
    assert os.path.realpath(init_dir) == os.path.join(REPO, "docker", "postgres-init")
    script = os.path.join(init_dir, "10-odoo-role.sh")
    assert os.access(script, os.X_OK), "the postgres image runs executable *.sh scripts"
    # over TCP: the postgres image runs its init scripts with a server on the Unix socket only
    assert "pg_isready -h 127.0.0.1" in " ".join(as_list(db["healthcheck"]["test"]))


# --------------------------------------------------------------------------------------------
# Odoo: install, upgrade, serve
# --------------------------------------------------------------------------------------------

def test_odoo_server_never_installs_and_waits_for_the_init_step(compose):
    odoo = compose["services"]["odoo"]
    assert as_list(odoo["command"]) == ["odoo"]
    depends = odoo["depends_on"]
    assert depends["odoo-init"]["condition"] == "service_completed_successfully"
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["rabbitmq"]["condition"] == "service_healthy"
    assert odoo["restart"] == "unless-stopped"


def test_init_and_upgrade_are_one_shot_steps(compose):
    init = compose["services"]["odoo-init"]
    assert as_list(init["command"]) == ["init"]
    assert init["restart"] == "no"
    upgrade = compose["services"]["odoo-upgrade"]
    assert as_list(upgrade["command"]) == ["upgrade"]
    assert upgrade["profiles"] == ["upgrade"], "the upgrade runs when asked for, not on `up`"
    assert upgrade["restart"] == "no"


def test_only_the_init_step_gets_the_admin_user_password(compose, tmp_path):
    for name in ("odoo", "odoo-upgrade"):
        assert "ODOO_ADMIN_USER_PASSWORD" not in environment(compose["services"][name]), name
    init = environment(compose["services"]["odoo-init"])
    assert init["ODOO_ADMIN_USER_PASSWORD"] == INIT_SECRET["ODOO_ADMIN_USER_PASSWORD"]
    assert init["PGPASSWORD"] == SECRETS["ODOO_DB_PASSWORD"], "the rest of the Odoo environment"
    # the server keeps starting once the admin user has a password and .env no longer has it
    assert run_config(tmp_path, SECRETS).returncode == 0


def test_odoo_health_asks_for_the_database_server(compose):
    """/web/health alone answers 200 with PostgreSQL down; db_server_status=1 answers 500."""
    check = " ".join(as_list(compose["services"]["odoo"]["healthcheck"]["test"]))
    assert "http://127.0.0.1:8069/web/health?db_server_status=1" in check
    image_check = [args for keyword, args in dockerfile_instructions("docker/odoo.Dockerfile")
                   if keyword == "HEALTHCHECK"][-1]
    assert "/web/health?db_server_status=1" in image_check


def test_one_shot_steps_have_no_health_check(compose):
    """They inherit the image's HEALTHCHECK, which asks an HTTP server they never start."""
    for name in ("odoo-init", "odoo-upgrade"):
        # docker-compose 1.29 prints `disable: true` as Docker's own form, test: [NONE]
        assert compose["services"][name]["healthcheck"] in ({"disable": True},
                                                            {"test": ["NONE"]}), name


def test_the_odoo_image_ships_no_python_tests():
    with open(os.path.join(REPO, ".dockerignore")) as handle:
        ignored = {line.strip().strip("/") for line in handle if not line.startswith("#")}
    assert "compute_bridge/tests" in ignored
    with open(os.path.join(REPO, "compute_bridge", "__manifest__.py")) as handle:
        manifest = ast.literal_eval(handle.read())
    listed = [path for key in ("data", "demo") for path in manifest.get(key, [])]
    assert not [path for path in listed if path.startswith("tests/")]


def test_odoo_runs_the_built_image_with_the_addon_in_it(compose):
    for name in ("odoo", "odoo-init", "odoo-upgrade"):
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "docker/odoo.Dockerfile"
        assert service["image"] == "compute-bridge-odoo:%s" % manifest_version()
        for target, source in mounts(service).items():
            assert not os.path.isabs(source) or not source.startswith(REPO), (
                "%s mounts %s from the checkout at %s" % (name, source, target))


def test_services_and_odoo_share_the_heartbeat_secret(compose):
    services = environment(compose["services"]["services"])
    odoo = environment(compose["services"]["odoo"])
    assert odoo["COMPUTE_BRIDGE_HEARTBEAT_SECRET"] == services["HEARTBEAT_SECRET"]
    assert services["HEARTBEAT_SECRET"] == SECRETS["HEARTBEAT_SECRET"]


# --------------------------------------------------------------------------------------------
# The services
# --------------------------------------------------------------------------------------------

def test_services_run_with_nameko_against_the_rabbitmq_service(compose):
    services = compose["services"]["services"]
    env = environment(services)
    assert env["HEARTBEAT_URL"] == "http://odoo:8069/compute_bridge/heartbeat"
    assert env["HEARTBEAT_INTERVAL"] == "30"
    assert services["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["image"] == "compute-bridge-services:%s" % manifest_version()
    cmd = [args for keyword, args in dockerfile_instructions("services/Dockerfile")
           if keyword == "CMD"][-1]
    assert cmd.startswith('["nameko", "run", "--config", "services/config.yaml"'), cmd


def test_unhealthy_services_are_restarted(compose):
    """Docker only marks a container unhealthy: the check ends `nameko run` (under Docker's
    init, so that SIGKILL reaches it) and the restart policy starts a new one."""
    services = compose["services"]["services"]
    assert services["restart"] in ("unless-stopped", "always")
    assert services["init"] is True
    healthcheck = [args for keyword, args in dockerfile_instructions("services/Dockerfile")
                   if keyword == "HEALTHCHECK"]
    assert healthcheck and "services-healthcheck.py" in healthcheck[-1], healthcheck


def test_services_can_be_scaled(compose):
    services = compose["services"]["services"]
    assert "container_name" not in services, "a fixed name forbids --scale services=N"
    assert not services.get("ports"), "a host port forbids --scale services=N"


# --------------------------------------------------------------------------------------------
# Images: reproducible, versioned, the addon copied in
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_image_is_pinned(dockerfile):
    froms = [args.split()[0] for keyword, args in dockerfile_instructions(dockerfile)
             if keyword == "FROM"]
    assert froms, "%s has no FROM" % dockerfile
    for image in froms:
        name, _, tag = image.partition("@")[0].partition(":")
        # a patch release (15.10, 3.11.11) or a dated build (18.0-20250819), never a moving tag
        assert re.match(r"\d+\.\d+(\.\d+|-\d{8})", tag), "%s: %s is not pinned" % (
            dockerfile, image)


def test_compose_images_are_pinned(compose):
    """PostgreSQL's major.minor is a patch release; RabbitMQ needs major.minor.patch."""
    for name, pattern in (("db", r"\d+\.\d+(-[\w.]+)?"), ("rabbitmq", r"\d+\.\d+\.\d+(-[\w.]+)?")):
        tag = compose["services"][name]["image"].partition("@")[0].partition(":")[2]
        assert re.fullmatch(pattern, tag), "%s: %r is not pinned" % (name, tag)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_carries_the_addon_version(dockerfile):
    labels = " ".join(args for keyword, args in dockerfile_instructions(dockerfile)
                      if keyword == "LABEL")
    match = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', labels)
    assert match, "%s has no version label" % dockerfile
    assert match.group(1) == manifest_version()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_pip_installs_pinned_requirements_without_shadowing(dockerfile):
    runs = " ".join(args for keyword, args in dockerfile_instructions(dockerfile)
                    if keyword == "RUN")
    assert "--ignore-installed" not in runs and "-I " not in runs
    for requirements in re.findall(r"-r\s+(\S+)", runs):
        copied = [args.split() for keyword, args in dockerfile_instructions(dockerfile)
                  if keyword == "COPY"]
        source = [parts[-2] for parts in copied if parts[-1] == requirements]
        assert source, "%s installs %s, which it does not copy" % (dockerfile, requirements)
        with open(os.path.join(REPO, source[0])) as handle:
            for line in handle:
                line = line.split("#")[0].strip()
                if line and not line.startswith("-"):
                    assert "==" in line, (
                        "%s: %s is not pinned" % (source[0], line))


def test_odoo_image_copies_the_addon_and_its_configuration():
    instructions = dockerfile_instructions("docker/odoo.Dockerfile")
    copies = {tuple(args.split()[-2:]) for keyword, args in instructions if keyword == "COPY"}
    assert ("compute_bridge", "/opt/compute_bridge/addons/compute_bridge") in copies
    assert ("docker/odoo.conf", "/etc/odoo/odoo.conf") in copies
    conf = configparser.ConfigParser()
    conf.read(ODOO_CONF)
    assert "/opt/compute_bridge/addons" in conf["options"]["addons_path"].split(",")
    entrypoint = [args for keyword, args in instructions if keyword == "ENTRYPOINT"][-1]
    assert "odoo-entrypoint.sh" in entrypoint
    assert os.access(os.path.join(REPO, "docker", "odoo-entrypoint.sh"), os.X_OK)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_does_not_run_as_root(dockerfile):
    users = [args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_source_exists(dockerfile):
    for keyword, args in dockerfile_instructions(dockerfile):
        if keyword == "COPY":
            sources = [part for part in args.split()[:-1] if not part.startswith("--")]
            for source in sources:
                assert os.path.exists(os.path.join(REPO, source)), (dockerfile, source)


def test_build_context_leaves_the_venv_and_secrets_out():
    with open(os.path.join(REPO, ".dockerignore")) as handle:
        ignored = {line.strip().strip("/") for line in handle if not line.startswith("#")}
    assert {".venv", ".run", ".git", ".env"} <= ignored


# --------------------------------------------------------------------------------------------
# docker/odoo.conf, as text (a real Odoo loads it in tests/integration/test_deploy_odoo.py)
# --------------------------------------------------------------------------------------------

def test_odoo_conf_is_for_production():
    conf = configparser.ConfigParser()
    conf.read(ODOO_CONF)
    options = conf["options"]
    assert options.getboolean("list_db") is False
    assert options.getboolean("proxy_mode") is True
    assert options.getint("workers") >= 2
    assert options.getint("gevent_port") == 8072
    for limit in ("limit_memory_soft", "limit_memory_hard", "limit_time_cpu", "limit_time_real",
                  "limit_request"):
        assert options.getint(limit) > 0, limit
    for secret in ("admin_passwd", "db_password"):
        assert secret not in options, "%s must come from a secret, not from the image" % secret

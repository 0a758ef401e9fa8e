"""README "Without Docker", followed step by step in fresh virtual environments.

1. An existing Odoo 18: a new venv with Odoo's own requirements.txt for this Python (the pins of
   an Odoo installed from source), then the addon's requirements.txt constrained by that same
   file, then `pip check`. Odoo's pins (greenlet, gevent, Werkzeug, urllib3, requests) must be
   left as they were, and Odoo must load the addon.
2. The services in an environment of their own, from services/requirements.txt: they answer an
   RPC call from step 1's environment, as Odoo's calls reach them.

Two deviations from a plain `pip install -r requirements.txt` of Odoo's file, both about this
machine, not the steps: python-ldap is left out (it builds against OpenLDAP headers, which are
not installed here, and only Odoo's auth_ldap module uses it), and building cbor2 5.4.2 from its
source needs setuptools < 81 (pkg_resources) in pip's build environment.
"""

import os
import subprocess
import sys

import pytest
from odoo_stack import REPO, odoo_src
from packaging.requirements import Requirement

BASE_PYTHON = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
INSTALL_TIMEOUT = 900  # seconds: a cold pip cache downloads and builds Odoo's dependencies
ODOO_TIMEOUT = 600
CALL_TIMEOUT = 60
# What the addon must never move in Odoo's environment (its gevent websocket worker uses them).
ODOO_PINNED = ("greenlet", "gevent", "Werkzeug", "urllib3", "requests", "idna")
UNBUILDABLE_HERE = ("python-ldap",)


def pip(venv, *args, **env):
    result = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-m", "pip", "--disable-pip-version-check", *args],
        env=dict(os.environ, **env), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        check=False)
    assert result.returncode == 0, "pip %s failed:\n%s\n%s" % (
        " ".join(args), result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def new_venv(path):
    subprocess.run([BASE_PYTHON, "-m", "venv", str(path)], check=True, timeout=INSTALL_TIMEOUT)
    return str(path)


def odoo_pins(requirements):
    """{name: version} that Odoo's requirements.txt pins for this Python."""
    pins = {}
    with open(requirements) as handle:
        for line in handle:
            line = line.split("#")[0].strip()
            if not line:
                continue
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate():
                continue
            versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            if versions:
                pins[requirement.name.lower()] = versions[0]
    return pins


def installed(venv):
    listing = pip(venv, "list", "--format=freeze")
    return dict(line.lower().split("==") for line in listing.split() if "==" in line)


@pytest.fixture(scope="module")
def odoo_venv(tmp_path_factory):
    """Step 1: (venv, Odoo's requirements.txt) with Odoo's pins and the addon's requirements."""
    src = odoo_src()
    folder = tmp_path_factory.mktemp("without_docker")
    odoo_requirements = os.path.join(src, "requirements.txt")
    buildable = folder / "odoo-requirements.txt"
    with open(odoo_requirements) as handle:
        buildable.write_text("".join(line for line in handle
                                     if not line.startswith(UNBUILDABLE_HERE)))
    build_constraints = folder / "build-constraints.txt"
    build_constraints.write_text("setuptools<81\n")
    venv = new_venv(folder / "odoo-venv")
    pip(venv, "install", "-q", "-r", str(buildable), PIP_CONSTRAINT=str(build_constraints))
    before = installed(venv)
    # the README's command
    pip(venv, "install", "-q", "-r", os.path.join(REPO, "requirements.txt"),
        "-c", odoo_requirements)
    return {"venv": venv, "src": src, "requirements": odoo_requirements, "before": before}


@pytest.fixture(scope="module")
def services_venv(tmp_path_factory):
    """Step 3's environment: services/requirements.txt alone. Every dependency is pinned in it,
    so --no-deps (as services/Dockerfile does) installs the same set without resolving it."""
    venv = new_venv(tmp_path_factory.mktemp("services") / "services-venv")
    pip(venv, "install", "-q", "--no-deps", "-r",
        os.path.join(REPO, "services", "requirements.txt"))
    return venv


def test_addon_requirements_keep_odoos_pins(odoo_venv):
    pins = odoo_pins(odoo_venv["requirements"])
    now = installed(odoo_venv["venv"])
    for name in ODOO_PINNED:
        key = name.lower()
        assert now[key] == pins[key] == odoo_venv["before"][key], (
            "%s: Odoo pins %s, now %s" % (name, pins[key], now.get(key)))
    changed = {name: (version, now.get(name)) for name, version in odoo_venv["before"].items()
               if now.get(name) != version}
    assert not changed, "the addon's requirements replaced Odoo's packages: %s" % changed
    assert now["kombu"] == "5.7.0" and "nameko" not in now and "eventlet" not in now


def test_pip_check_in_odoos_environment(odoo_venv):
    assert "No broken requirements found" in pip(odoo_venv["venv"], "check")


def test_that_odoo_loads_the_addon(odoo_venv):
    """README step 2 as far as the environment decides it: Odoo accepts the manifest's external
    dependencies (its own check at install) and imports the addon. Installing the addon on a
    database is tested in test_deploy_odoo.py."""
    load = (
        "import sys\n"
        "from odoo.tools import config\n"
        "config.parse_config(['--addons-path', sys.argv[1]])\n"
        "from odoo.modules import module\n"
        "module.check_manifest_dependencies(module.get_manifest('compute_bridge'))\n"
        "module.load_openerp_module('compute_bridge')\n"
        "import odoo.addons.compute_bridge.models\n"
        "print('loaded', module.get_manifest('compute_bridge')['version'])\n")
    result = subprocess.run(
        [os.path.join(odoo_venv["venv"], "bin", "python"), "-c", load, REPO],
        env=dict(os.environ, PYTHONPATH=odoo_venv["src"]), capture_output=True, text=True,
        timeout=ODOO_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stdout.strip().splitlines()[-1].startswith("loaded 18.0.")


def test_pip_check_in_the_services_environment(services_venv):
    assert "No broken requirements found" in pip(services_venv, "check")


def test_odoos_environment_calls_the_services_running_in_theirs(odoo_venv, services_venv,
                                                                 amqp_uri):
    """README step 3: `nameko run` from the services' venv; a call made with the addon's client
    in Odoo's venv (Odoo's pins underneath) is answered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEARTBEAT_", "WEB_SERVER"))}
    log = open(os.path.join(os.path.dirname(services_venv), "nameko.log"), "wb")
    services = subprocess.Popen(
        [os.path.join(services_venv, "bin", "nameko"), "run", "--broker", amqp_uri, "services"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The addon's own client, as Odoo runs it: rpc/ imports no Odoo, so it is loaded
        # from the addon folder alone.
        call = (
            "import sys, time\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from rpc import ServiceUnavailable, call, read_config\n"
            "config = read_config({}.get, {'COMPUTE_BRIDGE_BROKER_URL': sys.argv[1]})\n"
            "deadline = time.monotonic() + %d\n"
            "while True:\n"
            "    try:\n"
            "        print(call(config, 'compute', 'method', 99999, 99999)); break\n"
            "    except ServiceUnavailable:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.2)\n" % CALL_TIMEOUT)
        result = subprocess.run(
            [os.path.join(odoo_venv["venv"], "bin", "python"), "-c", call, amqp_uri,
             os.path.join(REPO, "compute_bridge")],
            capture_output=True, text=True, timeout=CALL_TIMEOUT * 2, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == "199998"
    finally:
        services.terminate()
        try:
            services.wait(timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            services.kill()
            services.wait()
        log.close()

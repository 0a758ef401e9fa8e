"""The hand-written docs render with docutils without a single warning, their links lead to files
that exist, and the root README.rst keeps the commands a newcomer runs and names every setting.

The addon's README.rst is generated: tests/unit/test_addon_readme.py checks it.
"""

import io
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.rst")
HAND_WRITTEN = ("README.rst", os.path.join("tests", "faults", "README.rst"))
WARNING = 2  # docutils' report level for warnings; errors are 3, severe 4


@pytest.fixture(scope="module")
def readme():
    with open(README, encoding="utf-8") as handle:
        return handle.read()


def _doctree(path):
    docutils_core = pytest.importorskip("docutils.core")
    from docutils.utils import SystemMessage

    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stream = io.StringIO()
    try:
        doctree = docutils_core.publish_doctree(
            text,
            source_path=path,
            settings_overrides={
                "report_level": WARNING,  # collect warnings and worse
                "halt_level": WARNING,  # and stop at the first one
                "warning_stream": stream,
                "file_insertion_enabled": False,  # as code hosts render it
                "raw_enabled": False,
            },
        )
    except SystemMessage as error:
        pytest.fail("%s does not render cleanly: %s\n%s" % (path, error, stream.getvalue()))
    assert stream.getvalue() == "", stream.getvalue()
    return doctree


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_renders_without_warning_and_links_to_files_that_exist(name):
    from docutils import nodes

    path = os.path.join(REPO, name)
    folder = os.path.dirname(path)
    for reference in _doctree(path).findall(nodes.reference):
        target = reference.get("refuri")
        if target and "://" not in target and not target.startswith(("#", "mailto:")):
            assert os.path.exists(os.path.join(folder, target)), "%s links to %s" % (name, target)


@pytest.mark.parametrize(
    "text",
    [
        "make run",
        "make test",
        "nameko run --broker pyamqp://guest:guest@localhost services",
        "nameko shell --broker pyamqp://guest:guest@localhost",
        "n.rpc.compute.method(99999, 99999)",
        "--addons-path=<repo>",  # the repository root is an addons folder
        "docker compose up --scale services=3",
        "-p no:odoo",
        "-p no:pytest_nameko",
        "Deploying to production",
    ],
)
def test_keeps_the_key_instructions(readme, text):
    assert text in readme


def _settings():
    """Every environment variable and system parameter the addon or the services read."""
    found = set()
    addon = os.path.join(REPO, "compute_bridge")
    for folder, dirs, files in os.walk(addon):
        dirs[:] = [name for name in dirs if name != "tests"]
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    code = handle.read()
                found.update(re.findall(r'"(COMPUTE_BRIDGE_[A-Z_]+)"', code))
                found.update(re.findall(r'[A-Z_]*PARAM\s*=\s*"(compute_bridge\.[a-z_]+)"', code))
    with open(os.path.join(REPO, "services", "config.yaml"), encoding="utf-8") as handle:
        found.update(re.findall(r"^[^#\n]*\$\{([A-Z_]+):", handle.read(), re.MULTILINE))
    return found


def test_the_configuration_table_names_every_setting(readme):
    settings = _settings()
    assert {"COMPUTE_BRIDGE_BROKER_URL", "compute_bridge.rpc_timeout", "AMQP_URI"} <= settings
    configuration = readme.split("\nConfiguration\n=====", 1)[1].split("\n=====", 1)[0]
    missing = sorted(name for name in settings if "``%s``" % name not in configuration)
    assert not missing, "README.rst's Configuration section does not name %s" % missing


def test_quick_start_commands_exist_in_the_makefile(readme):
    with open(os.path.join(REPO, "Makefile")) as handle:
        makefile = handle.read()
    for target in set(re.findall(r"``make ([a-z-]+)``", readme)) | {"run", "test"}:
        assert "\n%s:" % target in makefile, "make %s is documented but not defined" % target

"""README.rst must render with docutils without a single warning, and keep its key instructions."""

import io
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.rst")
WARNING = 2  # docutils' report level for warnings; errors are 3, severe 4


@pytest.fixture(scope="module")
def readme():
    with open(README, encoding="utf-8") as handle:
        return handle.read()


def test_renders_without_warning(readme):
    docutils_core = pytest.importorskip("docutils.core")
    from docutils.utils import SystemMessage

    stream = io.StringIO()
    try:
        docutils_core.publish_string(
            readme,
            source_path=README,
            writer_name="html5",
            settings_overrides={
                "report_level": WARNING,  # collect warnings and worse
                "halt_level": WARNING,  # and stop at the first one
                "warning_stream": stream,
                "file_insertion_enabled": False,  # as code hosts render it
                "raw_enabled": False,
                "output_encoding": "unicode",
            },
        )
    except SystemMessage as error:
        pytest.fail("README.rst does not render cleanly: %s\n%s" % (error, stream.getvalue()))
    assert stream.getvalue() == "", stream.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        "make run",
        "make test",
        "--addons-path=<repo>",  # the repository root is an addons folder
        "COMPUTE_BRIDGE_BROKER_URL",
        "compute_bridge.broker_url",
        "compute_bridge.rpc_timeout",
        "n.rpc.compute.method(99999, 99999)",
        "docker compose up --scale services=3",
        "-p no:odoo",
        "-p no:pytest_nameko",
    ],
)
def test_keeps_the_key_instructions(readme, text):
    assert text in readme


def test_quick_start_commands_exist_in_the_makefile():
    with open(os.path.join(REPO, "Makefile")) as handle:
        makefile = handle.read()
    for target in ("run", "test", "lint", "bench"):
        assert "\n%s:" % target in makefile, "make %s is documented but not defined" % target

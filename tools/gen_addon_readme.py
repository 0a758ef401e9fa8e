#!/usr/bin/env python3
"""Build an addon's README.rst and static/description/index.html from its readme/*.md fragments.

    python3 tools/gen_addon_readme.py            # rewrite compute_bridge/README.rst and index.html
    python3 tools/gen_addon_readme.py --check    # exit 1 when they are not what the fragments give

``make readme`` runs the first. Both outputs are committed, as in OCA's repositories: Odoo's Apps
screen shows index.html, code hosts show README.rst. tests/unit/test_addon_readme.py fails when
they are not what this script builds from the fragments.

The fragment names, the layout and the docutils settings are those of OCA's oca-gen-addon-readme
(OCA/maintainer-tools). That tool is not published on PyPI and converts Markdown with pandoc;
this one converts it with mistune's reStructuredText renderer, so it runs from the project's
own requirements (mistune, Jinja2, docutils).
"""

import argparse
import ast
import os
import re
import sys
import urllib.parse

import docutils.core
import docutils.utils
import jinja2
import mistune
from mistune.renderers.rst import RSTRenderer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ADDON_DIR = os.path.join(REPO, "compute_bridge")
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen_addon_readme.rst.jinja")
FRAGMENTS_DIR = "readme"
README = "README.rst"
INDEX = os.path.join("static", "description", "index.html")

# In the order OCA's template puts them: (fragment, section title).
SECTIONS = (
    ("CONTEXT", "Use Cases / Context"),
    ("INSTALL", "Installation"),
    ("CONFIGURE", "Configuration"),
    ("USAGE", "Usage"),
    ("DEVELOP", "Development"),
    ("ROADMAP", "Known issues / Roadmap"),
    ("HISTORY", "Changelog"),
)
CREDITS = (("CONTRIBUTORS", "Contributors"), ("CREDITS", "Other credits"))
FRAGMENTS = ("DESCRIPTION",) + tuple(name for name, _title in SECTIONS + CREDITS)

DEFAULT_DEVELOPMENT_STATUS = "Beta"  # OCA's default when the manifest names none
DEVELOPMENT_STATUS_PAGE = "https://odoo-community.org/page/development-status"
DEVELOPMENT_STATUS_BADGES = {
    "alpha": "https://img.shields.io/badge/maturity-Alpha-red.png",
    "beta": "https://img.shields.io/badge/maturity-Beta-yellow.png",
    "production/stable": "https://img.shields.io/badge/maturity-Production%2FStable-green.png",
    "mature": "https://img.shields.io/badge/maturity-Mature-brightgreen.png",
}
LICENSE_BADGES = {
    "AGPL-3": (
        "https://img.shields.io/badge/license-AGPL--3-blue.png",
        "http://www.gnu.org/licenses/agpl-3.0-standalone.html",
    ),
    "LGPL-3": (
        "https://img.shields.io/badge/license-LGPL--3-blue.png",
        "http://www.gnu.org/licenses/lgpl-3.0-standalone.html",
    ),
    "GPL-3": (
        "https://img.shields.io/badge/license-GPL--3-blue.png",
        "http://www.gnu.org/licenses/gpl-3.0-standalone.html",
    ),
}

# OCA's settings (from pypa/readme_renderer): no file inclusion, no raw HTML, stop at the first
# warning. Pygments is not required: fragments use code blocks without a language.
RST2HTML_SETTINGS = {
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "halt_level": 2,
    "report_level": 2,
    "math_output": "MathJax",
    "smart_quotes": True,
    "syntax_highlight": "short",
    # Odoo warns about an XML declaration in index.html; docutils adds a charset <meta> anyway.
    "xml_declaration": False,
    "output_encoding": "utf-8",
}

# An image in a fragment is written relative to readme/ (so that the fragment shows on a code
# host); README.rst sits in the addon folder and index.html in static/description/.
IMAGE_RE = re.compile(r"^(?P<lead>\s*\.\. (?:figure|image|\|[^|]+\| image)::\s+)(?P<path>\S+)\s*$")
TO_ADDON_DIR = "../"
TO_DESCRIPTION_DIR = "static/description/"
# Odoo's Apps screen drops <style> but keeps style attributes: without a width of its own, a
# screenshot wider than the form runs off its side.
IMAGE_WIDTH = "   :width: 100%"


class GenerationError(Exception):
    """The fragments or the manifest cannot make a README."""


def read_manifest(addon_dir):
    with open(os.path.join(addon_dir, "__manifest__.py"), encoding="utf-8") as handle:
        return ast.literal_eval(handle.read())


def _retarget_images(rst, old_prefix, new_prefix, option=None):
    """Images under old_prefix moved to new_prefix, each given `option` when there is one."""
    lines = []
    for line in rst.splitlines():
        match = IMAGE_RE.match(line)
        if match and match.group("path").startswith(old_prefix):
            line = match.group("lead") + new_prefix + match.group("path")[len(old_prefix) :]
            lines.extend([line, option] if option else [line])
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def markdown_to_rst(markdown):
    """One Markdown fragment as reStructuredText, its images relative to the addon folder."""
    rst = mistune.create_markdown(renderer=RSTRenderer())(markdown)
    return _retarget_images(rst, TO_ADDON_DIR, "", IMAGE_WIDTH)


def read_fragments(addon_dir):
    fragments = {}
    for name in FRAGMENTS:
        path = os.path.join(addon_dir, FRAGMENTS_DIR, name + ".md")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            if text.strip():
                fragments[name] = markdown_to_rst(text)
    if "DESCRIPTION" not in fragments:
        raise GenerationError(
            "%s/%s/DESCRIPTION.md is missing or empty" % (addon_dir, FRAGMENTS_DIR)
        )
    return fragments


def _badges(manifest):
    status = manifest.get("development_status", DEFAULT_DEVELOPMENT_STATUS)
    badges = []
    if status.lower() in DEVELOPMENT_STATUS_BADGES:
        badges.append((DEVELOPMENT_STATUS_BADGES[status.lower()], DEVELOPMENT_STATUS_PAGE, status))
    if manifest.get("license") in LICENSE_BADGES:
        image, target = LICENSE_BADGES[manifest["license"]]
        badges.append((image, target, "License: %s" % manifest["license"]))
    return badges


def _issues_url(website):
    """The issue tracker of a GitHub project, else None: only there is its address known."""
    url = urllib.parse.urlsplit(website)
    parts = [part for part in url.path.split("/") if part]
    if url.netloc == "github.com" and len(parts) >= 2:
        return "https://github.com/%s/%s/issues" % (parts[0], parts[1])
    return None


def render_readme(addon_dir):
    """The text of the addon's README.rst, built from its fragments and manifest."""
    manifest = read_manifest(addon_dir)
    if not manifest.get("website"):
        raise GenerationError("the manifest of %s has no website" % addon_dir)
    with open(TEMPLATE, encoding="utf-8") as handle:
        template = jinja2.Template(handle.read(), keep_trailing_newline=True)
    return template.render(
        manifest=manifest,
        badges=_badges(manifest),
        fragments=read_fragments(addon_dir),
        sections=SECTIONS,
        credits=CREDITS,
        authors=[
            author.strip() for author in manifest.get("author", "").split(",") if author.strip()
        ],
        issues_url=_issues_url(manifest["website"]),
        project=urllib.parse.urlsplit(manifest["website"]).path.strip("/"),
    )


def render_index(readme):
    """index.html for Odoo's Apps screen: the README as HTML, images relative to its folder.

    Odoo prefixes an image path without "static/" with /<addon>/static/description/.
    """
    return docutils.core.publish_string(
        _retarget_images(readme, TO_DESCRIPTION_DIR, ""),
        writer_name="html4css1",
        settings_overrides=RST2HTML_SETTINGS,
    )


def build(addon_dir):
    """{path: bytes} of every generated file."""
    readme = render_readme(addon_dir)
    return {
        os.path.join(addon_dir, README): readme.encode("utf-8"),
        os.path.join(addon_dir, INDEX): render_index(readme),
    }


def stale(addon_dir):
    """The generated files that are missing or differ from what the fragments give."""
    paths = []
    for path, content in build(addon_dir).items():
        try:
            with open(path, "rb") as handle:
                if handle.read() == content:
                    continue
        except FileNotFoundError:
            pass
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addon_dir", nargs="?", default=DEFAULT_ADDON_DIR)
    parser.add_argument(
        "--check", action="store_true", help="only say whether the files are current"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            paths = stale(args.addon_dir)
            for path in paths:
                print("%s is not what %s/ gives: run make readme" % (path, FRAGMENTS_DIR))
            return 1 if paths else 0
        for path, content in build(args.addon_dir).items():
            with open(path, "wb") as handle:
                handle.write(content)
            print("wrote %s" % os.path.relpath(path, REPO))
    except (GenerationError, docutils.utils.SystemMessage) as error:
        print("gen_addon_readme: %s" % error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

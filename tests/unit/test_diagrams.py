"""The documentation's diagrams (docs/*.svg) are what their Graphviz sources (docs/*.dot) give.

Both are committed; tools/gen_diagrams.py (`make diagrams`) draws the SVG and records the
source's SHA-256 in it. An edited source without a new SVG fails here, Graphviz installed or not.
"""

import importlib.util
import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MISSING_DOT = ("!!!!!!!! Graphviz's dot is not installed: the diagrams are not redrawn here "
               "(apt-get install graphviz, or python3 tools/stack.py ensure-tools) !!!!!!!!")


@pytest.fixture(scope="module")
def generator():
    path = os.path.join(REPO, "tools", "gen_diagrams.py")
    spec = importlib.util.spec_from_file_location("gen_diagrams", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_a_diagram_and_readme_shows_it(generator):
    names = [os.path.relpath(source, REPO) for source in generator.sources()]
    assert os.path.join("docs", "call_life.dot") in names, names
    with open(os.path.join(REPO, "README.rst"), encoding="utf-8") as handle:
        readme = handle.read()
    assert ".. image:: docs/call_life.svg" in readme


def test_every_svg_is_committed_and_drawn_from_its_current_source(generator):
    assert generator.stale() == [], "missing or stale SVG: run make diagrams"


def test_an_edited_source_makes_its_svg_stale(generator, tmp_path):
    for source in generator.sources():
        shutil.copy(source, tmp_path)
        shutil.copy(generator.svg_path(source), tmp_path)
    assert generator.stale(str(tmp_path)) == []
    edited = tmp_path / "call_life.dot"
    edited.write_text(edited.read_text(encoding="utf-8") + "// one more line\n",
                      encoding="utf-8")
    assert generator.stale(str(tmp_path)) == [str(edited)]
    os.unlink(tmp_path / "call_life.svg")
    assert generator.stale(str(tmp_path)) == [str(edited)]


def test_svg_is_what_graphviz_draws_now(generator):
    """Redrawn with the same Graphviz version, the committed SVG comes out byte for byte."""
    if not shutil.which(generator.DOT):
        pytest.skip(MISSING_DOT)
    for source in generator.sources():
        with open(generator.svg_path(source), encoding="utf-8") as handle:
            committed = handle.read()
        drawn = generator.render(source)
        if generator.graphviz_version(drawn) == generator.graphviz_version(committed):
            assert drawn == committed, "%s differs from what dot draws: run make diagrams" \
                % generator.svg_path(source)
        else:  # another Graphviz may lay it out differently: it must still draw the source
            assert "<svg" in drawn and generator.recorded_digest(drawn) == \
                generator.recorded_digest(committed)

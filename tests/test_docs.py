"""The docs stay true: quoted figures equal their measurement files, nothing unmeasured looks measured, links
resolve inside the repository, and the artifact contract documents every manifest field and graph kind."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from atld_deploy.measure import MARKER, MEASUREMENTS, quoted, render_figures

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = "../" + "shared"  # the notes beside a working copy, which a clone does not have
# a citation of the working notes a clone does not have: their folder, their files, or an issue/ticket number
CITATION = re.compile(
    "|".join([re.escape(OUTSIDE), r"\brefer" + "ence/", r"\b(atld-method|evaluation-protocol|deployment-facts)\.md\b",
              r"\bISSUE-" + "NOTES", r"\b(issue|ticket)s? (note|#?\d+)", r"(?<![\w&/])#\d+\b"]),
    re.I,
)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# written whole by the command that measured them (they name it), so their figures need no markers
GENERATED = {"REPRODUCTION.md", "CLI.md"}
# what a measured figure looks like: a decimal percentage, a ratio, a time, a speed or a size
MEASURED = re.compile(r"(?<![\w.])\d+\.\d+%|(?<![\w.])\d+(\.\d+)?x(?![\w\d])|\b\d+(\.\d+)? ?(ms|MiB|GiB|images/s|img/s)\b")


def _checked() -> list[Path]:
    return [p for p in DOCS if p.name not in GENERATED]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_figures_equal_their_measurement_files(doc: Path) -> None:
    text = doc.read_text()
    for m in MARKER.finditer(text):
        assert (MEASUREMENTS / m["file"]).is_file(), f"{doc.name}: no docs/measurements/{m['file']}"
        assert m["value"] == quoted(m), f"{doc.name}: {m['value']!r} but {m['file']} says {quoted(m)!r}"
    assert render_figures(text) == text


@pytest.mark.parametrize("doc", _checked(), ids=lambda p: p.name)
def test_no_unmarked_figure_looks_measured(doc: Path) -> None:
    text = MARKER.sub("", doc.read_text())
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands and their options are not measurements
    found = [m.group(0) for m in MEASURED.finditer(text)]
    assert not found, f"{doc.name} quotes {found[:5]} without a measurement file (write VALUE<!--m FILE PATH FMT-->)"


def test_a_wrong_figure_is_caught(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"figures": {"acc": 0.5}}))
    good = "accuracy 50.0%<!--m m.json figures::acc .1%-->"
    assert render_figures(good, tmp_path) == good
    assert render_figures(good.replace("50.0%", "57.0%"), tmp_path) == good
    assert MEASURED.search("it took 3.21x as long") and not MEASURED.search("8x8 digits, x0.1 at 50%")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert not CITATION.search(text), f"{doc.name} cites {CITATION.search(text).group(0)!r}"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links {target}, which is not in the repository"


def test_code_cites_no_internal_notes() -> None:
    for path in [*ROOT.glob("atld_deploy/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tests/**/*.py")]:
        found = [m.group(0) for m in CITATION.finditer(path.read_text())]
        assert not found, f"{path.relative_to(ROOT)} cites {found[:3]}, which a clone does not have"


@pytest.mark.parametrize("bad", [
    "x = 1  # see " + OUTSIDE + "/notes.md",
    "# the bound from refer" + "ence/deployment-facts" + ".md",
    '"""Checks (evaluation-protocol' + '.md, section 3)."""',
    "# targets in issue " + "15",
    "# fixed for ticket #" + "7",
    "# see #" + "12",
    "# the settled conflicts in ISSUE-" + "NOTES",
])
def test_a_citation_of_the_internal_notes_is_caught(bad: str) -> None:
    assert CITATION.search(bad), bad


def test_ordinary_comments_are_not_taken_for_citations() -> None:
    fine = ["# the reference outputs", "# docs/EXPORT.md#parity", "# colour &#38; text", "# one task per file"]
    assert not [s for s in fine if CITATION.search(s)]


def test_the_artifact_contract_documents_every_field_and_graph_kind() -> None:
    from atld_deploy.artifact import EngineEntry, GraphEntry, Manifest, TensorSpec
    from atld_deploy.graphs import GRAPH_KEYS
    from atld_deploy.schema import MANIFEST_SCHEMA

    text = (ROOT / "docs" / "ARTIFACT.md").read_text()
    names = set(MANIFEST_SCHEMA["properties"]) | {f.name for f in dataclasses.fields(Manifest)}
    names |= {f.name for cls in (GraphEntry, EngineEntry, TensorSpec) for f in dataclasses.fields(cls)}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/ARTIFACT.md does not describe {missing}"
    assert not sorted(k for k in GRAPH_KEYS if f"`{k}`" not in text)


def test_published_schemas_are_the_ones_the_code_validates_with() -> None:
    from atld_deploy.schema import SCHEMAS

    for name, schema in SCHEMAS.items():
        path = ROOT / "docs" / "schemas" / f"{name}.schema.json"
        assert json.loads(path.read_text()) == schema, f"stale: atld-deploy schema {name} > {path.relative_to(ROOT)}"

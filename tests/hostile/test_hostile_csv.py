"""Hostile file names in predictions files: CR/LF, spreadsheet formulas, bytes that are not UTF-8; and
malformed rows handed to `merge`.

Each case runs the real CLI (`infer`, `infer --resume`, `merge`) in a subprocess with a hard time limit and
checks the file it wrote, the exit code, and that nothing else was written or deleted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest
from cli_probe import assert_only_written, fingerprint, run_cli, write_digits

# name on disk (bytes: one is not UTF-8) -> how the `path` field spells it in both formats
NAMES = {
    b"cr\rname.png": "cr\\x0dname.png",
    b"lf\nname.png": "lf\\x0aname.png",
    b"=HYPERLINK(\"x\").png": "=HYPERLINK(\"x\").png",
    b"+1.png": "+1.png",
    b"-2.png": "-2.png",
    b"@SUM(A1).png": "@SUM(A1).png",
    b"\ttab.png": "\\x09tab.png",
    b"'quoted.png": "'quoted.png",
    b"back\\slash.png": "back\\\\slash.png",
    b"latin1-\xe9.png": "latin1-\\xe9.png",
    b"utf8-\xc3\xa9.png": "utf8-\u00e9.png",
}
FIELD = r'"(?:[^"\r\n]|"")*"'
CSV_LINE = re.compile(rf"^{FIELD}(?:,{FIELD}){{5}}$")  # six fields, every one quoted, on one line


@pytest.fixture()
def awkward(tmp_path: Path) -> Path:
    images = write_digits(tmp_path / "images", "plain.png")
    data = (images / "plain.png").read_bytes()
    for name in NAMES:
        with open(os.path.join(os.fsencode(images), name), "wb") as f:
            f.write(data)
    return images


def test_csv_quotes_every_field_neutralises_formulas_and_is_one_valid_utf8_line_per_file(
        tiny_artifacts: Path, awkward: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    before = fingerprint(tmp_path)
    r = run_cli("infer", awkward, "-a", tiny_artifacts, "-o", out, "--no-progress")
    assert r.code == 0, r.err
    text = out.read_bytes().decode("utf-8")  # strict: raises on any byte that is not UTF-8
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 1 + len(NAMES) + 1  # header, every file, plain.png
    assert all(CSV_LINE.match(line) for line in lines[:-1]), lines
    rows = list(csv.reader(io.StringIO(text)))
    assert all(cell[:1] not in ("=", "+", "-", "@", "\t", "\r") for row in rows for cell in row)
    # OWASP's neutralisation: a single quote before the cell; a name that starts with a quote gets one more
    want = {("'" + s if s[:1] in "=+-@'" else s) for s in NAMES.values()} | {"plain.png"}
    assert {row[0] for row in rows[1:]} == want
    assert_only_written(tmp_path, before, out)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_and_merge_read_every_awkward_name_back_to_its_file(tiny_artifacts: Path, awkward: Path,
                                                                    tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"preds{suffix}"
    assert run_cli("infer", awkward, "-a", tiny_artifacts, "-o", out, "--no-progress").code == 0
    first = out.read_bytes()
    before = fingerprint(tmp_path)
    again = run_cli("infer", awkward, "-a", tiny_artifacts, "-o", out, "--resume", "--no-progress")
    assert again.code == 0, again.err
    assert f"0 classified, 0 unreadable, {len(NAMES) + 1} skipped" in again.out  # nothing classified twice
    assert out.read_bytes() == first
    other = ".jsonl" if suffix == ".csv" else ".csv"
    merged, back = tmp_path / f"merged{other}", tmp_path / f"back{suffix}"
    m = run_cli("merge", out, "-o", merged, "--images", awkward)
    assert m.code == 0, m.err  # --images: every file under the folder is found in the merged rows
    assert f"merged {len(NAMES) + 1} lines" in m.out and "in no shard" not in m.out
    assert run_cli("merge", merged, "-o", back).code == 0
    assert back.read_bytes() == first  # CSV -> JSONL -> CSV (and back) changes nothing
    assert_only_written(tmp_path, before, merged, back)


def test_jsonl_spells_names_the_same_way_as_csv(tiny_artifacts: Path, awkward: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    assert run_cli("infer", awkward, "-a", tiny_artifacts, "-o", out, "--no-progress").code == 0
    paths = [json.loads(line)["path"] for line in out.read_text(encoding="ascii").splitlines()]
    assert sorted(paths) == sorted([*NAMES.values(), "plain.png"])


@pytest.mark.parametrize("content, what", [
    ('"path","label","class","confidence","p_natural","error"\n"a.png","seven","7","0.5","0.5",""\n', "label"),
    ('"path","label","class","confidence","p_natural","error"\n"a.png","7","7"\n', "3 fields"),
    ('"path","label","class","confidence","p_natural","error"\n"a.png","7","7","high","",""\n', "confidence"),
    ('{"path": "a.png", "label": "x", "class": "7", "confidence": 0.5, "p_natural": null}\n', "label"),
    ('{"path": 3, "error": "boom"}\n', "path"),
])
def test_merge_refuses_a_malformed_row_with_one_line_and_exit_2(tmp_path: Path, content: str, what: str) -> None:
    shard = tmp_path / ("shard.csv" if content.startswith('"') else "shard.jsonl")
    shard.write_text(content)
    before = fingerprint(tmp_path)
    r = run_cli("merge", shard, "-o", tmp_path / "merged.jsonl")
    assert r.code == 2, r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert f"{shard} line 2" in r.err or f"{shard} line 1" in r.err
    assert what in r.err and "not an atld-deploy predictions file" in r.err
    assert_only_written(tmp_path, before)

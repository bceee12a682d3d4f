"""`atld-deploy infer` / `infer_folder` on a folder mixing every image kind with broken files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import BROKEN, LOSSLESS, LOSSY
from PIL import Image
from typer.testing import CliRunner

from atld_deploy.cli import main
from atld_deploy.cli_app import app
from atld_deploy.runtime import infer_folder

REPO = Path(__file__).resolve().parents[2]


def read_jsonl(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a file appears twice"
    return by_path


def infer_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["infer", *args, "--no-progress"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def zoo_ort(zoo: Path, tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    out = tmp_path_factory.mktemp("out") / "preds.jsonl"
    code, text = infer_cli(str(zoo), "--artifacts", str(tiny_artifacts), "--output", str(out), "--backend", "onnxruntime")
    return code, text, out


def test_one_line_per_file_errors_for_broken_and_exit_3(zoo_ort: tuple[int, str, Path]) -> None:
    code, text, out = zoo_ort
    rows = read_jsonl(out)
    assert code == 3
    assert sorted(rows) == sorted(LOSSLESS + LOSSY + BROKEN)
    for rel in BROKEN:
        assert set(rows[rel]) == {"path", "error"} and rows[rel]["error"]
    for rel in LOSSLESS + LOSSY:
        assert set(rows[rel]) == {"path", "label", "class", "confidence", "p_natural"}
        assert 0 < rows[rel]["confidence"] <= 1 and 0 < rows[rel]["p_natural"] < 1
    assert f"{len(LOSSLESS) + len(LOSSY)} classified, {len(BROKEN)} unreadable" in text
    assert all(len(repr(rows[rel]["confidence"])) <= 8 for rel in LOSSLESS)  # rounded to 6 decimals


def test_console_entry_point_exits_3_when_some_files_are_unreadable(zoo: Path, tiny_artifacts: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    argv = ["infer", str(zoo), "-a", str(tiny_artifacts), "-o", str(out), "--no-progress"]
    assert main(argv) == 3  # what `atld-deploy infer` returns to the shell
    assert len(out.read_text().splitlines()) == len(LOSSLESS + LOSSY + BROKEN)


def test_every_lossless_kind_gets_the_base_images_result(zoo_ort: tuple[int, str, Path]) -> None:
    rows = read_jsonl(zoo_ort[2])
    for rel in LOSSLESS:
        assert rows[rel] == {**rows["base.png"], "path": rel}, rel


def test_torch_backend_gives_the_same_labels(zoo: Path, tiny_artifacts: Path, tmp_path: Path,
                                             zoo_ort: tuple[int, str, Path]) -> None:
    out = tmp_path / "torch.jsonl"
    code, _ = infer_cli(str(zoo), "-a", str(tiny_artifacts), "-o", str(out), "--backend", "torch", "--batch-size", "4")
    ref, got = read_jsonl(zoo_ort[2]), read_jsonl(out)
    assert code == 3 and got.keys() == ref.keys()
    for rel in ref:
        assert got[rel].get("label") == ref[rel].get("label"), rel
        assert ("error" in got[rel]) == ("error" in ref[rel])
        if "p_natural" in ref[rel]:
            assert abs(got[rel]["p_natural"] - ref[rel]["p_natural"]) < 1e-4


def test_csv_output_has_the_same_content(zoo: Path, tiny_artifacts: Path, tmp_path: Path,
                                         zoo_ort: tuple[int, str, Path]) -> None:
    out = tmp_path / "preds.csv"
    code, _ = infer_cli(str(zoo), "-a", str(tiny_artifacts), "-o", str(out), "--batch-size", "3", "--workers", "2")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    ref = read_jsonl(zoo_ort[2])
    assert code == 3 and [r["path"] for r in rows] == list(ref)  # same stable order
    for r in rows:
        if "error" in ref[r["path"]]:
            assert r["error"] and r["label"] == ""
        else:
            assert int(r["label"]) == ref[r["path"]]["label"] and r["error"] == ""
            assert float(r["confidence"]) == pytest.approx(ref[r["path"]]["confidence"], abs=1e-5)


def test_all_readable_exits_0_and_no_imt_still_has_p_natural(zoo: Path, tiny_artifacts: Path, tmp_path: Path) -> None:
    images = tmp_path / "ok"
    for rel in LOSSLESS[:4]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(zoo / rel, images / rel)
    out = images / "preds.jsonl"  # inside the folder: never classified itself
    code, text = infer_cli(str(images), "-a", str(tiny_artifacts), "-o", str(out), "--no-imt")
    rows = read_jsonl(out)
    assert code == 0 and len(rows) == 4 and "4 classified, 0 unreadable" in text
    assert all(0 <= r["p_natural"] <= 1 for r in rows.values())  # static: the discriminator graph gives it


def test_usage_errors_exit_2_with_one_line(zoo: Path, tiny_artifacts: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    cases = [
        (["infer", str(zoo), "-a", str(tmp_path / "missing"), "-o", str(out)], "artifact directory"),
        (["infer", str(zoo), "-a", str(tiny_artifacts), "-o", str(tmp_path / "p.txt")], "must end in .jsonl or .csv"),
        (["infer", str(tmp_path / "nope"), "-a", str(tiny_artifacts), "-o", str(out)], "is neither a folder nor an image file"),
        (["infer", str(zoo), "-a", str(tiny_artifacts), "-o", str(out), "--batch-size", "0"], "at least 1"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    out.write_text('{"path": "x.png", "label": 1}\n')
    assert main(["infer", str(zoo), "-a", str(tiny_artifacts), "-o", str(out), "--no-progress"]) == 2
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err
    assert out.read_text() == '{"path": "x.png", "label": 1}\n'  # nothing already done is lost


def test_resume_drops_a_partial_last_line_and_skips_done_files(zoo: Path, tiny_artifacts: Path, tmp_path: Path,
                                                              zoo_ort: tuple[int, str, Path]) -> None:
    full = zoo_ort[2].read_text().splitlines(keepends=True)
    out = tmp_path / "resume.jsonl"
    out.write_text("".join(full[:7]) + full[7][:15])  # a run killed in the middle of line 8
    summary = infer_folder(zoo, tiny_artifacts, out, backend="onnxruntime", resume=True)
    assert summary.skipped == 7 and summary.classified + summary.unreadable == len(full) - 7
    assert summary.previous_classified + summary.previous_unreadable == 7
    assert out.read_text().splitlines(keepends=True) == full  # same lines, same order, no duplicates


def test_resume_after_killing_a_real_run(tiny_artifacts: Path, base_digit: np.ndarray, tmp_path: Path) -> None:
    images, out = tmp_path / "many", tmp_path / "killed.csv"
    images.mkdir()
    for i in range(300):
        Image.fromarray(np.roll(base_digit, i % 8, axis=1), "L").save(images / f"{i:04d}.png")
    cmd = [sys.executable, "-m", "atld_deploy", "infer", str(images), "-a", str(tiny_artifacts), "-o", str(out),
           "--batch-size", "1", "--workers", "1", "--backend", "onnxruntime", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 20:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_at_kill = out.read_text().count("\n") - 1
    assert 0 < lines_at_kill < 300, "the run should have been killed part-way"
    with open(out, "a") as f:
        f.write("0150.png,3,3,0.5")  # and as if it died in the middle of a line
    code = main(["infer", str(images), "-a", str(tiny_artifacts), "-o", str(out), "--resume", "--no-progress"])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert code == 0
    assert [r["path"] for r in rows] == [f"{i:04d}.png" for i in range(300)]
    assert all(r["label"] != "" and r["error"] == "" for r in rows)


def test_json_lines_are_what_json_dumps_writes_for_the_escaped_names() -> None:
    from atld_deploy.runtime.outputs import _json_line, escape_text

    for name in ['a "quoted"\\name.png', "ünï/çødé ✓.png", "tab\there\n.png", "bad-\udcff-byte.png"]:
        row = (name, 3, 'cl"ass', 0.25, 0.5, None)
        want = {"path": escape_text(name), "label": 3, "class": 'cl"ass', "confidence": 0.25, "p_natural": 0.5}
        assert _json_line(row) == json.dumps(want) + "\n"
        assert _json_line((name, None, None, None, None, "bad\x00")) == json.dumps(
            {"path": escape_text(name), "error": "bad\\x00"}) + "\n"


def test_escaping_reads_back_every_character_and_leaves_plain_names_alone() -> None:
    from atld_deploy.runtime.outputs import escape_text, unescape_text

    rng = np.random.default_rng(0)
    singles = [chr(c) for c in range(0x3000)] + [chr(c) for c in range(0xD800, 0xE000)] + ["\U0001F600"]
    pieces = singles + ["\\x41", "\\\\", "\\u00e9", "\\", "x\\"]  # text that looks like an escape already
    names = singles + ["".join(rng.choice(pieces, 6)) for _ in range(2000)]
    for name in names:
        text = escape_text(name)
        assert unescape_text(text) == name, repr(name)
        assert len(text.splitlines()) <= 1 and not any(unicodedata.category(c) == "Cc" for c in text), repr(name)
        text.encode("utf-8")  # no lone surrogates left
    for plain in ["a/b.png", "ünï/çødé ✓.png", "=1.png", "x'y.png"]:
        assert escape_text(plain) == plain

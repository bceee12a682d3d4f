"""Hostile run configs: every value that sizes an allocation is bounded before anything is built from it."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atld_deploy.errors import AtldError, CheckpointError
from atld_deploy.run import read_run_meta
from snapshot import tree

TIMEOUT = 120


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    r = tmp_path / "run"
    shutil.copytree(tiny_run, r)
    return r


def _edit(run: Path, change: Any) -> None:
    d = json.loads((run / "config.json").read_text())
    change(d)
    (run / "config.json").write_text(json.dumps(d))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["config"].__setitem__("d_depth", 10**6), r"config/d_depth: 1000000 is greater than the maximum of 106"),
    (lambda d: d["config"].__setitem__("arch", "wrn-100000-100"), r"config/arch: 'wrn-100000-100' does not match"),
    (lambda d: d["config"].__setitem__("arch", "wrn-400-10"), r"arch 'wrn-400-10' is beyond the supported wrn-106-32"),
    (lambda d: d["data"].__setitem__("num_classes", 10**9), r"data/num_classes: 1000000000 is greater than the maximum"),
    (lambda d: d["data"].__setitem__("size", "abc"), r"data/size: 'abc' is not of type 'integer'"),
])
def test_export_refuses_unbounded_run_configs_in_one_line(run: Path, tmp_path: Path, change: Any, message: str) -> None:
    _edit(run, change)
    before = tree(run)
    res = subprocess.run([sys.executable, "-m", "atld_deploy", "export", str(run), "--out", str(tmp_path / "art")],
                         capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2, res.stderr
    [line] = [l for l in res.stderr.splitlines() if l.strip()]
    assert line.startswith("error: ") and __import__("re").search(message, line), line
    assert not (tmp_path / "art").exists() and tree(run) == before


def test_class_names_must_match_the_config(run: Path) -> None:
    (run / "classes.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CheckpointError, match=r"classes.json must list 10 class names"):
        read_run_meta(run)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json, key=st.sampled_from(["config", "data", "format", None]),
       field=st.sampled_from(["arch", "epochs", "d_depth", "eps", "lr_milestones", "dataset", "method", None]))
def test_fuzzed_run_configs_load_or_refuse_cleanly(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   doc: Any, key: str | None, field: str | None) -> None:
    base = json.loads((tiny_run / "config.json").read_text())
    d = copy.deepcopy(base)
    if key is None:
        d = doc
    elif key == "config" and field is not None:
        d["config"][field] = doc
    else:
        d[key] = doc
    run = tmp_path_factory.mktemp("fuzz")
    (run / "config.json").write_text(json.dumps(d))
    shutil.copy(tiny_run / "classes.json", run / "classes.json")
    try:
        read_run_meta(run)
    except AtldError as e:
        assert "\n" not in str(e)


def test_a_fifo_checkpoint_is_refused_not_waited_on(run: Path) -> None:
    (run / "checkpoint.pt").unlink()
    os.mkfifo(run / "checkpoint.pt")
    res = subprocess.run([sys.executable, "-m", "atld_deploy", "train", "--output", str(run), "--resume", "--epochs", "3",
                          "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2 and "checkpoint.pt" in res.stderr and "not a regular file" in res.stderr, res.stderr


@pytest.mark.parametrize("change, message", [
    (lambda d: d["input"].__setitem__("size", "abc"), "input/size: 'abc' is not of type 'integer'"),
    (lambda d: d.__setitem__("classes", ["x"]), "classes"),
    (lambda d: d["input"].pop("size"), "'size' is a required property"),
    (lambda d: d["graphs"]["pipeline"].__setitem__("file", "/etc/passwd"), "graphs/pipeline/file"),
    (lambda d: d["graphs"]["pipeline"].__setitem__("file", "../../elsewhere/x.onnx"), "graphs/pipeline/file"),
])
def test_infer_refuses_a_malformed_manifest_in_one_line_and_writes_nothing(
        tiny_artifacts: Path, tmp_path: Path, change: Any, message: str) -> None:
    import hashlib

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    d = json.loads((art / "manifest.json").read_text())
    change(d)
    (art / "manifest.json").write_text(json.dumps(d))
    (tmp_path / "images").mkdir()
    out = tmp_path / "preds.jsonl"
    res = subprocess.run([sys.executable, "-m", "atld_deploy", "infer", str(tmp_path / "images"), "-a", str(art), "-o",
                          str(out), "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not out.exists()
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    assert passwd[:16] not in res.stderr  # no hash oracle for files outside the artifact

"""Data-parallel training with torchrun on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from atld_deploy import load_run
from atld_deploy.train import Trainer


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "atld_deploy", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_two_gloo_processes_train_resume_and_change_process_count(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train", "--out", str(out), "--arch", "wrn-10-1", "--no-progress"]
    first = _torchrun(*common, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # exactly one run directory
    assert first.stdout.count("trained atld") == 1  # only rank 0 reports

    second = _torchrun(*common, "--epochs", "2", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(r["processes"] == 2 for r in records)
    assert records[1]["clean_acc"] > 0.6 and records[1]["ce"] < records[0]["ce"]  # it learns

    # the same run continues on one process (the checkpoint holds unwrapped modules)
    Trainer(load_run(out).config.replace(epochs=3), out, resume=True, progress=False).fit()
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2] and records[2]["processes"] == 1
    assert load_run(out).config.epochs == 3


def test_distributed_refusal_is_raised_on_every_rank(tmp_path: Path) -> None:
    """Every rank reaches the same verdict before anything is written, so none hangs and nothing is lost."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    args = ["train", "--out", str(tmp_path / "run"), "--arch", "wrn-10-1", "--epochs", "1", "--no-progress"]
    res = _torchrun(*args, "--overwrite")
    assert res.returncode != 0
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert res.stderr.count("is never replaced or deleted") == 2

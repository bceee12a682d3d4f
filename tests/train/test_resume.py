"""`train --resume` keeps the run's own configuration: only a longer --epochs may be given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atld_deploy.cli import main
from atld_deploy.config import make_config
from atld_deploy.errors import ConfigError
from atld_deploy.train import Trainer
from atld_deploy.train.trainer import resumed_config

from snapshot import tree


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_resuming_a_finished_run_touches_nothing(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(run_copy)
    assert main(["train", "--out", str(run_copy), "--resume", "--no-progress"]) == 0
    assert f"{run_copy} already finished 2/2 epochs; pass --epochs N to extend it" in capsys.readouterr().out
    assert tree(run_copy) == before


@pytest.mark.parametrize("args, named", [
    (["--arch", "wrn-16-4"], "--arch 'wrn-16-4' (the run has 'wrn-10-1')"),
    (["--dataset", "cifar10"], "--dataset 'cifar10' (the run has 'digits')"),
    (["--eps", "0.1", "--epochs", "4"], "--eps 0.1 (the run has 0.2)"),
    (["--epochs", "1"], "--epochs 1 is shorter than the run's 2"),
])
def test_resume_refuses_any_other_change(run_copy: Path, args: list[str], named: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(run_copy)
    assert main(["train", "--out", str(run_copy), "--resume", "--no-progress", *args]) == 2
    assert named in capsys.readouterr().err
    assert tree(run_copy) == before  # config.json byte-identical, nothing trained


def test_resume_ignores_defaults_and_extends_with_the_stored_config(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # a run whose eps and seed differ from the digits preset the CLI would otherwise fill in
    run = tmp_path / "run"
    cfg = make_config("digits", arch="wrn-10-1", epochs=1, d_depth=10, d_widen=1, eval_pgd_n=10, eps=0.1, seed=5)
    Trainer(cfg, run, progress=False).fit()
    stored = json.loads((run / "config.json").read_text())
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "trained atld wrn-10-1 on digits for 2 epochs" in out and "at eps 0.1 " in out
    now = json.loads((run / "config.json").read_text())
    assert now["config"] == {**stored["config"], "epochs": 2}
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_resumed_config_from_python() -> None:
    stored = make_config("digits", arch="wrn-10-1", epochs=3)
    assert resumed_config(stored) == stored
    assert resumed_config(stored, stored.replace(epochs=5)).epochs == 5
    with pytest.raises(ConfigError, match=r"--lr 0.5 \(the run has 0.1\)"):
        resumed_config(stored, stored.replace(lr=0.5))

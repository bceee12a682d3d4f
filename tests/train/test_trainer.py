"""Training runs: run directories, load_run, kill/resume equivalence, refusals and clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atld_deploy import load_run
from atld_deploy.cli import main
from atld_deploy.config import TrainConfig, make_config
from atld_deploy.errors import CheckpointError, ConfigError
from atld_deploy.train import Trainer
from atld_deploy.train.methods import STEPS

TRAIN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from atld_deploy.config import make_config
from atld_deploy.train import Trainer
cfg = make_config("digits", arch="wrn-10-1", epochs=4, d_depth=10, d_widen=1, eval_pgd_n=20, seed=3)
Trainer(cfg, sys.argv[1], resume=sys.argv[2] == "resume", progress=False).fit()
"""


def _train_subprocess(out: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(out), mode], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_load_run_api(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    assert run.classes == tuple(str(i) for i in range(10))
    assert isinstance(run.config, TrainConfig) and run.config.method == "atld"
    x = torch.rand(4, 1, 8, 8)
    logits = run.classifier(x)
    natural, cls = run.discriminator(logits)
    assert logits.shape == (4, 10) and natural.shape == (4,) and cls.shape == (4, 10)
    assert not run.classifier.training and not run.discriminator.training
    files = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "classes.json", "classifier.safetensors", "discriminator.safetensors", "metrics.jsonl",
            "checkpoint.pt", "summary.json"} <= files
    lines = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert {"loss", "ce", "inv", "scale", "loss_d", "clean_acc", "pgd20_acc", "images_per_s"} <= set(lines[0])


def test_kill_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ref = _train_subprocess(straight, "new")
    proc = _train_subprocess(killed, "new")
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    # checkpoint.pt appears by an atomic rename once epoch 1 is fully saved: kill any time after that
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "training never finished its first epoch"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the kill landed after the run had finished"
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()
    resumed = _train_subprocess(killed, "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()

    for name in ("classifier.safetensors", "discriminator.safetensors"):
        a, b = load_file(straight / name), load_file(killed / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), (name, k)
    epochs = [json.loads(l)["epoch"] for l in metrics.read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


def test_existing_run_is_not_overwritten(tiny_run: Path) -> None:
    before = (tiny_run / "classifier.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it or --overwrite to replace it"):
        Trainer(make_config("digits", epochs=1), tiny_run, progress=False)
    assert (tiny_run / "classifier.safetensors").read_bytes() == before


def test_overwrite_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an atld-deploy run directory, so it is never replaced or deleted"):
        Trainer(make_config("digits", epochs=1), tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "precious.txt").exists()


def test_corrupt_checkpoint_and_weights(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is corrupt .*--overwrite"):
        Trainer(None, run, resume=True, progress=False)
    (run / "classifier.safetensors").write_bytes(b"{not safetensors")
    with pytest.raises(CheckpointError, match=r"classifier.safetensors is corrupt or not a safetensors file"):
        load_run(run)
    with pytest.raises(CheckpointError, match="does not exist; train one with `atld-deploy train --output "):
        load_run(tmp_path / "missing")


def test_every_method_steps(tiny_run: Path) -> None:
    """One real optimisation step per method: finite loss terms and the classifier's weights change."""
    data = Trainer(make_config("digits", epochs=1), tiny_run.parent / "scratch_methods", overwrite=True, progress=False).data
    x, y = data.train.batch(torch.arange(16))
    for method, step in STEPS.items():
        cfg = make_config("digits", method=method, arch="wrn-10-1", d_depth=10, d_widen=1, pgd_steps=2, ot_iters=5)
        t = Trainer(cfg, tiny_run.parent / f"scratch_{method}", overwrite=True, progress=False, data=data)
        before = t.nets.classifier.fc.weight.detach().clone()
        terms = step(t.nets, cfg, x, y, torch.Generator().manual_seed(0))
        assert all(v == v and abs(v) < 1e4 for v in terms.values()), (method, terms)
        assert not torch.equal(before, t.nets.classifier.fc.weight), method


def test_divergence_invariance_option(tmp_path: Path) -> None:
    cfg = make_config("digits", arch="wrn-10-1", epochs=1, d_depth=10, d_widen=1, invariance="divergence", eval_pgd_n=20)
    r = Trainer(cfg, tmp_path / "div", progress=False).fit()
    assert r.clean_acc > 0.3 and load_run(tmp_path / "div").config.invariance == "divergence"


def test_cli_train_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["train", "--out", str(out), "--arch", "wrn-10-1", "--epochs", "1", "--method", "standard", "--no-progress"]
    assert main(args) == 0
    assert "trained standard wrn-10-1 on digits for 1 epochs" in capsys.readouterr().out
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--dataset", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'; choose one of digits, cifar10, cifar100, svhn, folder" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "y"), "--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10 not found: expected" in err and "--download" in err
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())

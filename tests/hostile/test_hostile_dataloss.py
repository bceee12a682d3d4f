"""A refused `export` or `train --overwrite` never deletes or changes a directory the tool did not write.

Each case hashes the whole tree (and its parent's listing) before and after the real console command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atld_deploy.config import make_config
from atld_deploy.errors import ConfigError
from atld_deploy.owned import Replacement
from atld_deploy.train import Trainer
from snapshot import tree

TIMEOUT = 240


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atld_deploy", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture()
def web_app(tmp_path: Path) -> Path:
    app = tmp_path / "site" / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "My PWA", "start_url": "/", "icons": []}))
    (app / "index.html").write_text("<html><body>my app</body></html>")
    (app / "src" / "app.js").write_text("console.log('precious');")
    return app


@pytest.fixture()
def model_folder(tmp_path: Path) -> Path:
    d = tmp_path / "models" / "bert"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    (d / "pytorch_model.bin").write_bytes(os.urandom(4096))
    (d / "notes.txt").write_text("months of work")
    return d


def test_export_refuses_a_web_app_folder_with_a_manifest(tiny_run: Path, web_app: Path) -> None:
    before = tree(web_app)
    res = cli("export", str(tiny_run), "--out", str(web_app), "--skip-parity")
    assert res.returncode == 2, res.stderr
    assert "is not an atld-deploy artifact directory, so it is never replaced or deleted" in res.stderr
    assert "index.html" in res.stderr and "Traceback" not in res.stderr
    assert tree(web_app) == before  # nothing changed, and no temporary sibling was left behind


def test_export_refuses_an_artifact_holding_a_users_file(tiny_artifacts: Path, tiny_run: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    (art / "NOTES.md").write_text("my deployment notes")
    before = tree(art)
    res = cli("export", str(tiny_run), "--out", str(art), "--skip-parity")
    assert res.returncode == 2, res.stderr
    assert "also files atld-deploy did not write there (NOTES.md)" in res.stderr
    assert tree(art) == before


def test_export_refuses_a_forged_marker_and_a_symlink(tiny_run: Path, web_app: Path, tmp_path: Path) -> None:
    # a manifest that claims the marker but lists nothing cannot make index.html and src/ ours
    (web_app / "manifest.json").write_text(json.dumps({"format": "atld-deploy/artifact", "graphs": {}}))
    before = tree(web_app)
    res = cli("export", str(tiny_run), "--out", str(web_app), "--skip-parity")
    assert res.returncode == 2 and "did not write there (index.html, src)" in res.stderr, res.stderr
    assert tree(web_app) == before
    link = tmp_path / "link"
    link.symlink_to(web_app)
    res = cli("export", str(tiny_run), "--out", str(link), "--skip-parity")
    assert res.returncode == 2 and "is a symbolic link" in res.stderr, res.stderr
    assert tree(web_app) == before and link.is_symlink()


def test_export_replaces_its_own_artifact(tiny_artifacts: Path, tiny_run: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    (art / "classifier.onnx").write_bytes(b"stale")  # replaced wholesale, not checked: it is ours
    res = cli("export", str(tiny_run), "--out", str(art), "--skip-parity")
    assert res.returncode == 0, res.stderr
    assert (art / "classifier.onnx").read_bytes() != b"stale"
    assert sorted(os.listdir(tmp_path)) == ["art"]  # the old one was deleted, no sibling left


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_train_overwrite_refuses_a_model_folder(model_folder: Path, device: str) -> None:
    before = tree(model_folder)
    res = cli("train", "--out", str(model_folder), "--overwrite", "--device", device, "--epochs", "1", "--no-progress")
    assert res.returncode == 2, res.stderr
    assert "is not an atld-deploy run directory, so it is never replaced or deleted" in res.stderr
    assert tree(model_folder) == before


def test_train_overwrite_checks_the_device_before_touching_its_own_run(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree(run)
    res = cli("train", "--out", str(run), "--overwrite", "--device", "cuda", "--epochs", "1", "--no-progress")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, so --device cuda is not a refusal here")
    assert res.returncode == 2 and "no CUDA GPU" in res.stderr, res.stderr
    assert tree(run) == before


def test_train_overwrite_refuses_a_run_holding_a_users_file(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "notes.txt").write_text("why this run matters")
    before = tree(run)
    with pytest.raises(ConfigError, match=r"also files atld-deploy did not write there \(notes.txt\)"):
        Trainer(make_config("digits", arch="wrn-10-1", epochs=1), run, overwrite=True, progress=False)
    assert tree(run) == before


def test_a_failing_overwrite_puts_the_old_run_back(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atld_deploy.train import methods

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree(run)
    cfg = make_config("digits", arch="wrn-10-1", epochs=1, d_depth=10, d_widen=1, eval_pgd_n=10)
    trainer = Trainer(cfg, run, overwrite=True, progress=False)

    def broken_step(*_: object) -> dict[str, float]:
        raise RuntimeError("the first batch failed")

    monkeypatch.setitem(methods.STEPS, "atld", broken_step)
    with pytest.raises(RuntimeError, match="the first batch failed"):
        trainer.fit()
    assert tree(run) == before


def test_replacement_rollback_and_commit(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("old")
    r = Replacement(d)
    r.begin()
    d.mkdir()
    (d / "a").write_text("new")
    r.rollback()
    assert (d / "a").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["d"]
    r = Replacement(d)
    r.begin()
    d.mkdir()
    r.commit()
    assert sorted(os.listdir(tmp_path)) == ["d"] and not any(d.iterdir())

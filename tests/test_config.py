"""Presets and the resolved training configuration: learning-rate milestones as fractions of the run, the
per-data-set IMT+ band, and configs written by older versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atld_deploy.cli import main
from atld_deploy.config import PRESETS, TrainConfig, make_config, milestone_epochs
from atld_deploy.errors import ConfigError
from atld_deploy.run import DataShape, Run, build_networks


def test_every_preset_stores_milestones_as_fractions_of_its_run() -> None:
    for name, preset in PRESETS.items():
        assert all(0 < m < 1 for m in preset["lr_milestones"]), name
    assert make_config("cifar10").lr_milestones == (60, 90)  # the paper's epochs of its 400
    assert make_config("digits").lr_milestones == (20, 25)


@pytest.mark.parametrize("dataset,epochs,expected", [
    ("cifar10", 200, (30, 45)), ("cifar10", 15, (3, 4)), ("folder", 3, (2, 3)), ("digits", 15, (10, 13)),
])
def test_a_shorter_run_decays_at_the_same_relative_points(dataset: str, epochs: int, expected: tuple[int, ...]) -> None:
    assert make_config(dataset, epochs=epochs).lr_milestones == expected


def test_milestone_override_takes_fractions_or_epochs() -> None:
    assert make_config("digits", epochs=10, lr_milestones="0.5,0.9").lr_milestones == (5, 9)
    assert make_config("digits", epochs=10, lr_milestones=(3, 7)).lr_milestones == (3, 7)
    assert milestone_epochs((0.15, 0.225), 400) == (60, 90)  # 0.15 * 400 is 60.000000000000007 in floats
    for bad, match in (("1.5", "neither a fraction"), ("-0.1", "neither a fraction"), ("a,b", "comma-separated")):
        with pytest.raises(ConfigError, match=match):
            make_config("digits", lr_milestones=bad)
    with pytest.raises(ConfigError, match="increasing order"):
        TrainConfig(lr_milestones=(25, 20))


def test_imt_band_is_per_data_set_and_carried_by_the_run() -> None:
    assert make_config("svhn").imt_band == (0.3, 0.6)
    assert make_config("cifar10").imt_band == (0.3, 0.7)
    cfg = make_config("svhn", arch="wrn-10-1", d_depth=10, d_widen=1)
    shape = DataShape(3, 32, 10)
    f, d = build_networks(cfg, shape)
    run = Run(Path("."), TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))), tuple("0123456789"), shape, f, d)
    assert run.imt_config("plus").band == (0.3, 0.6)
    with pytest.raises(ConfigError, match="imt_band"):
        make_config("svhn", imt_band=(0.7, 0.3))


def test_a_config_written_before_fractions_and_bands_still_loads() -> None:
    old = make_config("folder").to_dict()
    del old["imt_band"]
    old["lr_milestones"] = [50, 75]
    cfg = TrainConfig.from_dict(old)
    assert cfg.lr_milestones == (50, 75) and cfg.imt_band == (0.3, 0.7)


@pytest.fixture
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: a second thread only synchronises
    yield
    torch.set_num_threads(threads)


def test_train_for_three_epochs_decays_the_learning_rate(tmp_path: Path, one_thread: object) -> None:
    common = ["train", "--arch", "wrn-10-1", "--epochs", "3", "--method", "standard", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "default")]) == 0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "default" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.001)  # milestones 2 and 3 of 3
    assert main(common + ["--out", str(tmp_path / "late"), "--lr-milestones", "0.9"]) == 0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "late" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[:2] == pytest.approx([0.1, 0.1])
    assert main(common + ["--out", str(tmp_path / "bad"), "--lr-milestones", "60,1.5"]) == 2

"""docs/CLI.md matches `--help`; the help texts that restate the code's tables match them; old spellings work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atld_deploy.cli import main
from atld_deploy.cli_reference import render
from atld_deploy.commands import options
from atld_deploy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_docs_cli_md_is_what_the_cli_says() -> None:
    committed = (ROOT / "docs" / "CLI.md").read_text()
    assert committed == render(), "docs/CLI.md is stale: python -m atld_deploy.cli_reference > docs/CLI.md"


def test_train_help_states_the_presets_of_the_code() -> None:
    from atld_deploy.commands.train import PRESETS_HELP
    from atld_deploy.config import PRESETS

    lines = {l.split()[0]: l for l in PRESETS_HELP.splitlines()[1:] if l.strip()}
    assert set(lines) == set(PRESETS)
    for name, p in PRESETS.items():
        line = lines[name]
        eps = "8/255" if abs(p["eps"] - 8 / 255) < 1e-12 else f"{p['eps']:g}"
        assert f" {p['arch']} " in line and f"{p['epochs']} epochs" in line and f"batch {p['batch_size']}" in line, name
        assert f"lr {p['lr']:g}," in line and f"eps {eps}" in line, name
        assert "milestones " + ",".join(f"{m:.3g}" for m in p["lr_milestones"]) in line, name
        if "imt_band" in p:
            assert f"band {p['imt_band'][0]:g}-{p['imt_band'][1]:g}" in line


def test_eval_help_states_the_default_attacks() -> None:
    from atld_deploy.commands.evaluate import DEFAULT_ATTACKS_HELP
    from atld_deploy.evaluate import DEFAULT_ATTACKS

    assert DEFAULT_ATTACKS_HELP == ",".join(DEFAULT_ATTACKS)


@pytest.mark.parametrize("old, new", [("plus", "imt-plus"), ("plain", "imt"), ("off", "static"), ("imt+", "imt-plus"),
                                      ("IMT-Plus", "imt-plus"), ("static", "static")])
def test_old_imt_mode_names_still_parse(old: str, new: str) -> None:
    assert options.imt_mode(old) == new
    assert options.imt_modes(f"static,{old}") == ["static", new]
    with pytest.raises(ConfigError, match="IMT mode must be one of"):
        options.imt_mode("imt++")


def test_either_spelling_but_not_two_different_values() -> None:
    assert options.either(Path("a"), None, "--output", "--out") == Path("a")
    assert options.either(None, Path("b"), "--output", "--out") == Path("b")
    with pytest.raises(ConfigError, match="--output and --out are the same option"):
        options.either(Path("a"), Path("b"), "--output", "--out")
    with pytest.raises(ConfigError, match="missing option --output"):
        options.either(None, None, "--output", "--out")


def test_old_infer_and_bench_spellings_still_work(tiny_artifacts: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8), mode="L").save(images / f"{i}.png")
    out = tmp_path / "old.jsonl"
    assert main(["infer", str(images), "--artifacts", str(tiny_artifacts), "--output", str(out), "--no-imt",
                 "--no-progress"]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= r["p_natural"] <= 1 for r in rows)  # --no-imt: static, p_natural still
    new = tmp_path / "new.jsonl"
    assert main(["infer", str(images / "1.png"), "-a", str(tiny_artifacts), "-o", str(new), "--imt", "imt-plus",
                 "--no-progress"]) == 0
    assert [json.loads(l)["path"] for l in new.read_text().splitlines()] == ["1.png"]  # one file, not a folder
    assert main(["bench", str(tiny_artifacts), "--backends", "onnxruntime", "--batch-sizes", "1", "--iters", "1"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_infer_checks_its_paths_before_loading_anything(tiny_artifacts: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "p.jsonl"
    existing.write_text('{"path": "x"}\n')
    assert main(["infer", str(tmp_path), "-a", str(tmp_path / "no-such-artifact"), "-o", str(existing)]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err  # the output, not the missing artifact
    assert main(["infer", str(tmp_path / "missing"), "-a", str(tiny_artifacts), "-o", str(tmp_path / "q.jsonl")]) == 2
    assert "is neither a folder nor an image file" in capsys.readouterr().err
    assert not (tmp_path / "q.jsonl").exists()
    assert main(["infer", str(tmp_path), "-a", str(tiny_artifacts), "-o", str(tmp_path / "r.jsonl"), "--imt", "imt"]) == 2
    assert "was exported with IMT mode imt-plus" in capsys.readouterr().err

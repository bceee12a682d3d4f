"""Sharded batch inference: 3 shards cover a folder exactly once and merge into the unsharded result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atld_deploy.cli import main
from atld_deploy.errors import ConfigError, DataError
from atld_deploy.runtime.shard import Shard, merge_predictions


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for i in range(40):
        d = root / f"d{i % 3}" / ("deep" if i % 5 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(d / f"img{i:02d}.png")
    (root / "d1" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_three_shards_cover_the_folder_once(tiny_artifacts: Path, folder: Path, tmp_path: Path) -> None:
    base = ["infer", str(folder), "-a", str(tiny_artifacts), "--backend", "onnxruntime", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "all.jsonl")]) == 3  # one unreadable file
    outs = []
    for i in range(3):
        out = tmp_path / f"shard{i}.jsonl"
        main([*base, "-o", str(out), "--shard", f"{i}/3"])
        outs.append(out)
    parts = [{r["path"] for r in _lines(o)} for o in outs]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    merged = tmp_path / "merged.jsonl"
    assert main(["merge", *map(str, outs), "-o", str(merged), "--images", str(folder)]) == 0
    assert _lines(merged) == _lines(tmp_path / "all.jsonl")  # same lines, same (walk) order


def test_shard_assignment_is_stable_and_validated() -> None:
    s = Shard.parse(" 1/4 ")
    names = [f"x/{i}.png" for i in range(400)]
    owned = [n for n in names if s.owns(n)]
    assert 60 < len(owned) < 140 and owned == [n for n in names if Shard(1, 4).owns(n)]
    assert sum(Shard(i, 4).owns(n) for i in range(4) for n in names) == len(names)
    for bad in ("4/4", "1-4", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)


def test_merge_refuses_overlaps_and_partial_shards(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    line = '{"path": "x.png", "label": 1, "class": "1", "confidence": 0.9, "p_natural": 0.8}\n'
    a.write_text(line)
    b.write_text(line)
    with pytest.raises(DataError, match="x.png is listed in both"):
        merge_predictions([a, b], tmp_path / "m.jsonl")
    b.write_text('{"path": "y.png", "label": 2, "cla')
    with pytest.raises(DataError, match="ends with a partial line.*--resume"):
        merge_predictions([a, b], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()

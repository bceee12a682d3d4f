"""`make bench-gpu` without a GPU: a dry run that says so first, names every item it skipped, still runs what
needs no GPU, and never replaces a GPU run's figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: bench-gpu would not run dry by itself")
def test_without_cuda_it_runs_dry_by_itself_and_names_each_skipped_item(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRY", raising=False)
    bench = _bench_gpu()
    out = tmp_path / "bench_gpu.json"
    assert bench.main(["--run", str(tmp_path / "no-run"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bench-gpu: DRY MODE (no CUDA GPU visible to torch)")
    for item in bench.ITEMS:
        assert any(line.startswith(f"  SKIPPED {item}: ") for line in lines), item
    doc = json.loads(out.read_text())
    assert doc["figures"]["dry"] is True and sorted(doc["figures"]["skipped"]) == sorted(bench.ITEMS)
    assert len(doc["figures"]["throughput"]["planned"]) == 4 * len(bench.BATCHES) + 2 * len(bench.BATCHES)
    # every TensorRT row has an engine the export builds, the float16 ones from the float16 graphs
    engines = doc["figures"]["engines"]["planned"]
    assert engines["fp16"] == {"pipeline": "pipeline_fp16", "classifier": "classifier_fp16"}
    assert engines["fp32"] == {"classifier": "classifier", "pipeline": "pipeline"}
    for _, precision, backend, graphs in bench.THROUGHPUT:
        assert backend != "tensorrt" or set(graphs) <= set(engines[precision]), (precision, graphs)
    assert isinstance(doc["figures"]["train"]["cpu_probe_ratio"], float)  # the harness itself ran
    assert "loadavg" in doc["machine"] and doc["commit"]


def test_dry_forced_keeps_a_gpu_runs_figures(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRY", "1")
    bench = _bench_gpu()
    out = tmp_path / "bench_gpu.json"
    gpu_record = json.dumps({"command": "a GPU run", "figures": {"dry": False, "throughput": {"rows": []}}})
    out.write_text(gpu_record)
    assert bench.main(["--run", str(tmp_path / "no-run"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("bench-gpu: DRY MODE (asked for (--dry / DRY=1))")
    assert any(line.startswith(f"kept {out}") for line in printed)
    assert out.read_text() == gpu_record
    out.write_text(json.dumps({"figures": {"dry": True}}))  # an earlier dry record is replaced
    assert bench.main(["--run", str(tmp_path / "no-run"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["figures"]["skipped"]

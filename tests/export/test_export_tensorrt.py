"""The TensorRT path end to end: engines built from the exported graphs, sidecars, parity against PyTorch.

Runs only where TensorRT and a CUDA GPU exist (`pytest -m tensorrt`); skipped with the reason elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atld_deploy.export import Manifest, check_engine_sidecar, export_run, tensorrt_status, verify_artifacts

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = tensorrt_status()
    if missing:  # decided before the tiny run is trained, so the skip costs nothing
        pytest.skip(f"needs TensorRT and a CUDA GPU: {missing}")
    tiny_run = request.getfixturevalue("tiny_run")
    art = tmp_path_factory.mktemp("trt") / "art"
    export_run(tiny_run, art, trt=True, min_batch=1, opt_batch=16, max_batch=64)
    return art


def test_engines_are_built_with_matching_sidecars(engines: Path) -> None:
    m = Manifest.load(engines)
    assert {"pipeline", "classifier"} <= set(m.engines)
    for key, e in m.engines.items():
        assert (e.min_batch, e.opt_batch, e.max_batch) == (1, 16, 64)
        side = check_engine_sidecar(engines / e.sidecar, m.graph_path(engines, e.source_graph))
        assert side["onnx_sha256"] == m.graphs[e.source_graph].sha256, key


def test_engine_parity_with_pytorch(engines: Path) -> None:
    report = verify_artifacts(engines, backends=["tensorrt"], n_real=128, n_random=32)
    assert report.passed, report.table()
    # judged through the runner `infer` serves engines with, not another TensorRT binding
    assert report.entries and all(e.runner.startswith("atld_deploy.runtime.trt_runner.TensorRTRunner on ")
                                  for e in report.entries), [e.runner for e in report.entries]


def test_fp16_engine_is_built_from_the_float16_graph_and_passes_fp16_parity(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    missing = tensorrt_status()
    if missing:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {missing}")
    art = tmp_path / "art16"
    export_run(request.getfixturevalue("tiny_run"), art, trt=True, precision="fp16", min_batch=1, opt_batch=16, max_batch=64)
    m = Manifest.load(art)
    assert m.engines["pipeline"].source_graph == "pipeline_fp16" and m.engines["pipeline"].precision == "fp16"
    report = verify_artifacts(art, backends=["tensorrt"], n_real=128, n_random=32)
    assert report.passed, report.table()
    entry = next(e for e in report.entries if e.graph.startswith("pipeline"))
    assert entry.precision == "fp16" and entry.label_bar is not None and entry.label_flips <= entry.label_bar  # floor-derived

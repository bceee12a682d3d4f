"""Parity runs through the runtime's own runners, opened as `infer` opens them: the verdict is about the code
that serves. A runner that serves wrong numbers fails parity; so does a verification variant that computes
something other than the served graph."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest

from atld_deploy.artifact import Manifest
from atld_deploy.export.verify import verify_artifacts
from atld_deploy.runtime import ort_runner
from atld_deploy.runtime.ort_runner import OnnxRuntimeRunner
from atld_deploy.runtime.select import cuda_available, open_runner

SMALL = {"n_real": 64, "n_random": 16}  # enough for the float32 bars (at least 3 flips above the expected)


class PerturbedLogits(OnnxRuntimeRunner):
    """The serving runner with one bug: logits come back shifted by five times the float32 error bar."""

    def _infer(self, feeds: Mapping[str, Any], batch: int) -> dict[str, Any]:
        out = super()._infer(feeds, batch)
        if "logits" in out:
            out["logits"] = out["logits"] + 5e-3 * max(1.0, float(np.abs(out["logits"]).max()))
        return out


class VariantDrifts(OnnxRuntimeRunner):
    """A correct serving runner whose step variant (the one that outputs images_imt) drifts by one float32
    ulp in p_natural: far inside every error bar, yet the step it shows would not be the served graph's."""

    def _infer(self, feeds: Mapping[str, Any], batch: int) -> dict[str, Any]:
        out = super()._infer(feeds, batch)
        if "images_imt" in out:
            out["p_natural"] = np.nextafter(out["p_natural"], np.float32(2.0))
        return out


@pytest.fixture()
def art(tiny_artifacts: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))


def test_verify_judges_the_runner_infer_opens(art: Path) -> None:
    m = Manifest.load(art)
    report = verify_artifacts(art, record=False, **SMALL)
    assert report.passed, report.table()
    assert {e.graph for e in report.entries} >= set(m.graphs)
    for e in report.entries:
        served, _ = open_runner(art, m, e.graph, backend="onnxruntime", device="cpu")
        served.close()
        assert e.runner.startswith(f"{type(served).__module__}.{type(served).__qualname__} on "), e.runner
        assert e.runner.startswith("atld_deploy.runtime.ort_runner.OnnxRuntimeRunner"), e.runner
    pipe = next(e for e in report.entries if e.graph == "pipeline")
    assert pipe.step is not None and pipe.step.pixels_checked > 1000  # images_imt reached it through the variant
    if not cuda_available():
        assert any(s.startswith("onnxruntime (cuda): ") for s in report.skipped), report.skipped


def test_a_runner_serving_wrong_logits_fails_parity(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_runner, "OnnxRuntimeRunner", PerturbedLogits)  # what select's factory imports
    before = (art / "manifest.json").read_bytes()
    report = verify_artifacts(art, record=False, **SMALL)
    assert not report.passed
    failed = {e.graph: e.failures for e in report.entries if not e.passed}
    assert set(failed) == {"classifier", "pipeline"}, report.table()  # the discriminator outputs no logits
    assert all(any(f.startswith("logits: max |err|") for f in fs) for fs in failed.values()), failed
    assert all(e.runner.startswith(f"{__name__}.PerturbedLogits") for e in report.entries)
    assert (art / "manifest.json").read_bytes() == before  # read-only without record


def test_a_step_variant_that_is_not_the_served_graph_fails_parity(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_runner, "OnnxRuntimeRunner", VariantDrifts)
    report = verify_artifacts(art, record=False, **SMALL)
    (pipe,) = [e for e in report.entries if e.graph == "pipeline"]
    assert pipe.failures == ["p_natural: the served graph and its variant with images_imt exposed disagree, so the "
                             "step checked would not be the served graph's"]
    assert all(e.passed for e in report.entries if e.graph != "pipeline")


def test_twin_outputs_are_the_served_graphs_bit_for_bit_on_cpu_and_within_the_bar_elsewhere() -> None:
    from atld_deploy.export.parity import same_computation

    served = np.linspace(-3.0, 3.0, 50, dtype=np.float32)
    ulp = np.nextafter(served, np.float32(9.0))
    assert same_computation(served, served.copy(), "cpu", "fp32")
    assert not same_computation(served, ulp, "cpu", "fp32")  # one ulp is a different computation on the CPU
    assert same_computation(served, ulp, "cuda", "fp32")  # GPU kernels may differ per session by rounding
    assert not same_computation(served, served + 4e-3, "cuda", "fp32")  # beyond 1e-3 x max(1, |served|) = 3e-3
    assert not same_computation(served, served[:-1], "cpu", "fp32")

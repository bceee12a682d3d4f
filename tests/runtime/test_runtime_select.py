"""Backend selection: every path of `auto`, explicit backends, and tampered or incomplete artifacts."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from atld_deploy.errors import ConfigError, EngineError, ExportError
from atld_deploy.runtime import Classifier


@pytest.fixture()
def art_copy(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A private copy of the artifacts that a test may damage."""
    return Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))


def test_auto_on_this_machine_picks_onnxruntime_cpu_and_logs_why(
    tiny_artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="atld_deploy.runtime"):
        clf = Classifier.load(tiny_artifacts)
    assert (clf.backend, clf.device) == ("onnxruntime", "cpu")
    passed = {p.label: p.reason for p in clf.passed_over}
    assert "no TensorRT engine for 'pipeline'" in passed["tensorrt (cuda)"]
    assert "CUDAExecutionProvider" in passed["onnxruntime (cuda)"]
    [msg] = [r.getMessage() for r in caplog.records if "runtime:" in r.getMessage()]
    assert "backend auto fell back to onnxruntime (cpu) for 'pipeline' (onnxruntime (CPUExecutionProvider))" in msg
    assert "passed over tensorrt (cuda)" in msg
    assert [r.levelname for r in caplog.records if "runtime:" in r.getMessage()] == ["INFO"]  # nothing failed


def test_auto_falls_back_to_torch_without_onnxruntime(
    tiny_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails as if not installed
    clf = Classifier.load(tiny_artifacts)
    assert (clf.backend, clf.device) == ("torch", "cpu")
    assert {p.label: p.reason for p in clf.passed_over}["onnxruntime (cpu)"] == "onnxruntime is not installed"
    assert len(clf.predict(np.zeros((2, 8, 8, 1), np.uint8))) == 2
    with pytest.raises(EngineError, match="onnxruntime .cpu.: onnxruntime is not installed"):
        Classifier.load(tiny_artifacts, backend="onnxruntime")


def test_explicit_backends_that_cannot_run_here_say_why(tiny_artifacts: Path) -> None:
    with pytest.raises(EngineError, match=r"no tensorrt backend can run 'pipeline'.*no TensorRT engine"):
        Classifier.load(tiny_artifacts, backend="tensorrt")
    with pytest.raises(EngineError, match=r"onnxruntime \(cpu\): device 'cuda' was requested"):
        Classifier.load(tiny_artifacts, backend="onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="backend must be one of auto, tensorrt, onnxruntime, torch, got 'tvm'"):
        Classifier.load(tiny_artifacts, backend="tvm")


def test_tampered_graph_is_refused_before_any_backend(art_copy: Path) -> None:
    p = art_copy / "pipeline.onnx"
    p.write_bytes(p.read_bytes() + b"\0")
    for backend in ("auto", "torch", "onnxruntime"):
        with pytest.raises(ExportError, match=r"pipeline.onnx does not match the SHA-256 .* modified or damaged after export"):
            Classifier.load(art_copy, backend=backend)


def test_missing_graph_and_foreign_manifest_are_refused(art_copy: Path) -> None:
    (art_copy / "classifier.onnx").unlink()
    with pytest.raises(ExportError, match="classifier.onnx is listed in .* but missing"):
        Classifier.load(art_copy)
    m = json.loads((art_copy / "manifest.json").read_text())
    m["format_version"] = 999
    (art_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="format_version 999"):
        Classifier.load(art_copy)
    with pytest.raises(ExportError, match="does not exist"):
        Classifier.load(art_copy / "nope")


def test_torch_backend_without_the_run_copy(art_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(art_copy / "run")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EngineError, match=r"torch \(cpu\): the artifact has no run copy"):
        Classifier.load(art_copy)


def add_engine(art: Path, sidecar: dict | None) -> None:
    """List a TensorRT engine for 'pipeline' in the manifest, as `export --trt` does on a GPU machine."""
    from atld_deploy.export.manifest import EngineEntry, Manifest
    from atld_deploy.io import sha256_file

    (art / "pipeline.fp32.engine").write_bytes(b"serialized plan bytes")
    if sidecar is not None:
        (art / "pipeline.fp32.engine.json").write_text(json.dumps(sidecar))
    m = Manifest.load(art)
    side = art / "pipeline.fp32.engine.json"
    entry = EngineEntry("pipeline.fp32.engine", "pipeline", "fp32", side.name, sha256_file(art / "pipeline.fp32.engine"),
                        1, 64, 256, sha256_file(side) if side.exists() else "0" * 64)
    Manifest(**{**m.__dict__, "engines": {"pipeline": entry}}).save(art)


def sidecar_for(art: Path, **over: str) -> dict:
    from atld_deploy.io import sha256_file

    return {"tensorrt": "10.9.0", "gpu": "NVIDIA H100", "compute_capability": "9.0", "engine": "pipeline.fp32.engine",
            "onnx": "pipeline.onnx", "onnx_sha256": sha256_file(art / "pipeline.onnx"), **over}


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        ({}, "`tensorrt` is not installed"),  # a good engine, but this machine cannot run TensorRT
        ({"onnx_sha256": "0" * 64}, "was built from an ONNX file with SHA-256 0000"),  # stale: graph re-exported
    ],
)
def test_engine_is_passed_over_when_its_sidecar_does_not_fit(art_copy: Path, sidecar: dict | None, reason: str) -> None:
    add_engine(art_copy, None if sidecar is None else sidecar_for(art_copy, **sidecar))
    clf = Classifier.load(art_copy)
    assert clf.backend == "onnxruntime"
    assert re.search(reason, {p.label: p.reason for p in clf.passed_over}["tensorrt (cuda)"])
    with pytest.raises(EngineError, match=f"tensorrt \\(cuda\\): .*{reason}"):
        Classifier.load(art_copy, backend="tensorrt")


def test_tampered_engine_or_missing_sidecar_is_refused(art_copy: Path) -> None:
    add_engine(art_copy, sidecar_for(art_copy))
    (art_copy / "pipeline.fp32.engine").write_bytes(b"something else")
    with pytest.raises(ExportError, match="pipeline.fp32.engine does not match the SHA-256"):
        Classifier.load(art_copy)
    add_engine(art_copy, None)  # the manifest lists a sidecar that is not there: the listing is refused whole
    (art_copy / "pipeline.fp32.engine.json").unlink(missing_ok=True)
    with pytest.raises(ExportError, match=r"pipeline.fp32.engine.json is listed in .* but missing"):
        Classifier.load(art_copy)

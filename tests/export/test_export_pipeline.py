"""End-to-end export of the tiny ATLD run (one export per session, through the CLI with --trt)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from atld_deploy.cli import main
from atld_deploy.errors import ExportError
from atld_deploy.export import Manifest, tensorrt_status, verify_artifacts
from atld_deploy.export.manifest import MANIFEST, PARITY, RUN_DIR
from atld_deploy.export.parity import binomial_bar, floor_label_rate
from atld_deploy.imt import IMTPipeline
from atld_deploy.run import load_run

# Every test digit plus random images: label bars are binomial bounds on these 400 images (parity.py).
PARITY_ARGS = ["--parity-real", "360", "--parity-random", "40"]


@pytest.fixture(scope="session")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """`atld-deploy export RUN --output ART --fp16`: returns (ART, exit code, stderr); the engines are
    test_export_tensorrt.py's subject."""
    art = tmp_path_factory.mktemp("art") / "art"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["export", str(tiny_run), "--output", str(art), "--fp16", "--max-batch", "64", *PARITY_ARGS])
    assert rc == 0, err.getvalue()
    return art, rc, err.getvalue()


def test_export_writes_every_file_and_passes(exported: tuple[Path, int, str]) -> None:
    art = exported[0]
    m = Manifest.load(art)  # checks every SHA-256
    assert set(m.graphs) == {"classifier", "discriminator", "pipeline", "pipeline_fp16", "classifier_fp16"}
    assert m.verified is True
    assert m.imt == {"mode": "plus", "eps": 0.2, "band": [0.3, 0.7], "factor": 0.5}
    assert [t.name for t in m.graphs["pipeline"].outputs] == ["logits", "p_natural"]
    assert m.graphs["pipeline"].inputs[0].shape == ["batch", 1, 8, 8]
    for name in ("config.json", "classes.json", "classifier.safetensors", "discriminator.safetensors"):
        assert (art / RUN_DIR / name).is_file()
    report = json.loads((art / PARITY).read_text())
    assert report["passed"] is True and report["inputs"]["real"] == 360 and report["inputs"]["random"] == 40
    pipe = next(e for e in report["entries"] if e["graph"] == "pipeline")
    # float32 bars, stated before the graph ran: labels a 99.9% binomial bound at a 0.1% flip rate
    assert pipe["samples"] == 400 and pipe["label_bar"] == binomial_bar(400, 1e-3) and pipe["label_flips"] <= pipe["label_bar"]
    assert pipe["sign_bar"] == pytest.approx(0.999) and pipe["sign_agreement"] >= pipe["sign_bar"]
    step = pipe["step"]  # the IMT step itself: exact wherever it is not clamped
    assert step["pixels_checked"] > 10_000 and step["pixels_wrong"] == 0 and step["pixels_outside"] == 0
    assert step["examples_other_band"] == 0
    import onnx

    model = onnx.load(str(art / "pipeline.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["atld.imt"]) == m.imt and json.loads(props["atld.classes"]) == m.classes
    assert props["atld.graph"] == "pipeline"
    # Transposed convolutions are rewritten to Conv(+DepthToSpace) except where kernel < stride (1x1 stride 2).
    for n in model.graph.node:
        if n.op_type == "ConvTranspose":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            assert a["kernel_shape"][0] < a["strides"][0], n.name
    assert any(n.op_type == "DepthToSpace" for n in model.graph.node)
    assert not any(n.op_type == "LessOrEqual" for n in model.graph.node)  # ReLU-backward masks are Mul now


def test_float16_pipeline_is_float16_inside_float32_outside_and_verified(exported: tuple[Path, int, str]) -> None:
    import onnx

    art = exported[0]
    m = Manifest.load(art)
    entry = m.graphs["pipeline_fp16"]
    assert entry.precision == "fp16"
    assert [(t.name, t.dtype) for t in entry.inputs] == [("images", "float32")]
    assert [(t.name, t.dtype) for t in entry.outputs] == [("logits", "float32"), ("p_natural", "float32")]
    model = onnx.load(str(art / entry.file))
    f16 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(n.input[1] in f16 for n in convs)  # every convolution (forward and backward) in float16
    gemm_weights = [n.input[1] for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert any(w not in f16 for w in gemm_weights)  # the discriminator stays float32
    report = json.loads((art / PARITY).read_text())
    e16 = next(e for e in report["entries"] if e["graph"] == "pipeline_fp16")
    assert e16["passed"] and e16["precision"] == "fp16"
    # the bars come from this model's float16-weight floor on the same 400 images, measured at export
    n, floor_flips = e16["samples"], e16["floor_label_flips"]
    assert n == 400 and e16["label_bar"] == binomial_bar(n, floor_label_rate(floor_flips, n)) >= floor_flips + 3
    assert e16["label_flips"] <= e16["label_bar"] and e16["sign_agreement"] >= e16["sign_bar"]
    assert e16["step"]["pixels_checked"] > 10_000 and e16["step"]["pixels_wrong"] == 0  # the step is float32 inside
    for name in ("logits", "p_natural"):
        out = e16["outputs"][name]
        assert out["mean_abs"] <= out["bar"] <= 1e-2 * out["ref_scale"]


def test_float16_classifier_is_float16_inside_float32_outside_and_verified_on_the_floor_bars(
        exported: tuple[Path, int, str]) -> None:
    import onnx

    art = exported[0]
    m = Manifest.load(art)
    entry = m.graphs["classifier_fp16"]
    assert entry.precision == "fp16" and (entry.inputs, entry.outputs) == (m.graphs["classifier"].inputs,
                                                                          m.graphs["classifier"].outputs)
    model = onnx.load(str(art / entry.file))
    f16 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in f16 for n in convs)  # every convolution in float16
    props = {p.key: p.value for p in model.metadata_props}
    assert (props["atld.graph"], props["atld.precision"]) == ("classifier_fp16", "fp16")
    report = json.loads((art / PARITY).read_text())
    e16 = next(e for e in report["entries"] if e["graph"] == "classifier_fp16")
    assert e16["passed"] and e16["precision"] == "fp16"
    # the same float16 bars as the pipeline's logits: from the float16-weight floor on the same 400 images
    n, floor_flips = e16["samples"], e16["floor_label_flips"]
    assert n == 400 and e16["label_bar"] == binomial_bar(n, floor_label_rate(floor_flips, n)) >= floor_flips + 3
    assert e16["label_flips"] <= e16["label_bar"]
    out = e16["outputs"]["logits"]
    assert out["mean_abs"] <= out["bar"] <= 1e-2 * out["ref_scale"]
    assert e16["step"] is None and e16["sign_agreement"] is None  # a classifier has no IMT step


def test_every_exported_kind_is_in_the_manifest_as_the_catalogue_describes_it(exported: tuple[Path, int, str]) -> None:
    from atld_deploy.export.exporter import ExportOptions, exported_kinds
    from atld_deploy.runtime.select import open_runner

    art = exported[0]
    m = Manifest.load(art)
    kinds = exported_kinds(ExportOptions(fp16=True))  # what the fixture asked for
    assert [k.key for k in kinds] == list(m.graphs)
    entries = json.loads((art / PARITY).read_text())["entries"]
    for kind in kinds:
        g = m.graphs[kind.key]
        ins, outs = kind.specs(len(m.classes), m.input["channels"], m.input["size"])
        assert (g.inputs, g.outputs, g.precision, g.file) == (ins, outs, kind.precision, f"{kind.key}.onnx")
        (entry,) = [e for e in entries if e["graph"] == kind.key]  # judged once, by the serving runner
        assert entry["runner"] == "atld_deploy.runtime.ort_runner.OnnxRuntimeRunner on onnxruntime (CPUExecutionProvider)"
        for backend in ("onnxruntime", "torch"):  # and served by the selector
            runner, _ = open_runner(art, m, kind.key, backend=backend, device="cpu")
            assert [t.name for t in runner.outputs] == [t.name for t in kind.outputs]
            runner.close()


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_one_file_serves_every_batch_size(exported: tuple[Path, int, str], tiny_run: Path, batch: int) -> None:
    import onnxruntime as ort

    art = exported[0]
    run = load_run(tiny_run)
    pipe = IMTPipeline(run.classifier, run.discriminator, run.imt_config())
    sess = ort.InferenceSession(str(art / "pipeline.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
    logits, p = sess.run(None, {"images": x.numpy()})
    ref_logits, ref_p, _ = pipe(x)
    assert logits.shape == (batch, 10) and p.shape == (batch,)
    assert np.abs(logits - ref_logits.detach().numpy()).max() <= 1e-3 * max(1.0, float(ref_logits.abs().max()))
    assert (logits.argmax(1) == ref_logits.argmax(1).numpy()).all()
    assert np.abs(p - ref_p.detach().numpy()).max() < 1e-4


def test_tampered_onnx_is_a_hash_mismatch(exported: tuple[Path, int, str], tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    data = bytearray((art / "pipeline.onnx").read_bytes())
    data[-10] ^= 0xFF
    (art / "pipeline.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"pipeline\.onnx (has|does not match the) SHA-256 .* re-export with `atld-deploy export RUN --output ART`"):
        Manifest.load(art)
    assert main(["verify", str(art)]) == 2


def test_trt_without_tensorrt_is_refused_before_any_work(tiny_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    missing = tensorrt_status()
    if not missing:
        pytest.skip("TensorRT and a CUDA GPU are present; the engine path is tested by test_export_tensorrt.py")
    art = tmp_path / "art"
    assert main(["export", str(tiny_run), "--output", str(art), "--trt"]) == 2
    err = capsys.readouterr().err
    assert f"--trt: {missing}; nothing was written" in err and "Export without --trt here" in err
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary directory


def test_verify_cli_rechecks(exported: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    (art / PARITY).unlink()
    manifest_before = (art / "manifest.json").read_bytes()
    assert main(["verify", str(art), "--parity-real", "160", "--parity-random", "40"]) == 0
    out = capsys.readouterr().out
    assert "pipeline" in out and "PASS" in out and "FAIL" not in out and "read-only check" in out
    assert not (art / PARITY).exists() and (art / "manifest.json").read_bytes() == manifest_before  # read-only
    assert main(["verify", str(art), "--parity-real", "160", "--parity-random", "40", "--record"]) == 0
    assert json.loads((art / PARITY).read_text())["passed"] is True
    assert main(["verify", str(art), "--backend", "tensorrt"]) == (2 if tensorrt_status() else 0)


def test_interrupted_export_leaves_previous_artifacts(exported: tuple[Path, int, str], tiny_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import atld_deploy.export.exporter as exporter

    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    before = {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}
    real = exporter.export_onnx
    calls = []

    def interrupted(*args: object, **kw: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # mid-write: classifier.onnx is already in the temp dir
        real(*args, **kw)

    monkeypatch.setattr(exporter, "export_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        exporter.export_run(tiny_run, art, skip_parity=True)
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()} == before
    Manifest.load(art)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp dir left behind


def test_op_outside_tensorrt_list_refuses_export(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atld_deploy.export import checks

    data = dict(checks.trt_support())
    data["ops"] = [op for op in data["ops"] if op != "Conv"]
    monkeypatch.setattr(checks, "trt_support", lambda: data)
    with pytest.raises(ExportError, match=r"classifier \(classifier\.onnx\): node '.*' \(op Conv\) is not in TensorRT's ONNX-parser support list"):
        from atld_deploy.export import export_run

        export_run(tiny_run, tmp_path / "art", skip_parity=True)
    assert not (tmp_path / "art").exists()
    assert list(tmp_path.iterdir()) == []


def test_baseline_run_is_refused(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same run relabelled as a standard (no discriminator) run: cheaper than training a baseline.
    run = tmp_path / "standard"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["method"] = "standard"
    (run / "config.json").write_text(json.dumps(meta))
    assert main(["export", str(run), "--out", str(tmp_path / "a")]) == 2
    assert "has no discriminator" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_existing_non_artifact_out_is_not_replaced(exported: tuple[Path, int, str], tmp_path: Path) -> None:
    from atld_deploy.export.exporter import _swap_in

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    new = tmp_path / "new"
    shutil.copytree(exported[0], new)
    with pytest.raises(ExportError, match="is not an atld-deploy artifact directory"):
        _swap_in(new, out)
    assert (out / "notes.txt").read_text() == "keep me" and not (out / MANIFEST).exists()


def test_modified_run_copy_is_a_hash_mismatch(exported: tuple[Path, int, str], tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    assert set(Manifest.load(art).run_files) == {"config.json", "classes.json", "classifier.safetensors",
                                                  "discriminator.safetensors"}
    weights = art / RUN_DIR / "classifier.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight: the torch backend would silently serve another model
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"run/classifier\.safetensors (has|does not match the) SHA-256 .* re-export"):
        Manifest.load(art)


def test_failed_parity_never_replaces_previous_artifacts(exported: tuple[Path, int, str], tiny_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from atld_deploy.export import parity

    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    before = {p.relative_to(art): p.read_bytes() for p in art.rglob("*") if p.is_file()}
    # a bar no float computation meets: this export's (real) parity check fails
    monkeypatch.setitem(parity.THRESHOLDS, "fp32", dataclasses.replace(parity.THRESHOLDS["fp32"], abs_err=0.0))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["export", str(tiny_run), "--out", str(art), "--parity-real", "16", "--parity-random", "4"])
    assert rc == 2
    assert {p.relative_to(art): p.read_bytes() for p in art.rglob("*") if p.is_file()} == before
    (failed,) = [p for p in tmp_path.iterdir() if p.name.startswith("art.failed-parity-")]
    assert f"the new artifacts are in {failed}" in err.getvalue() and "still holds the previous artifacts" in err.getvalue()
    m = Manifest.load(failed)
    assert m.verified is False and not json.loads((failed / PARITY).read_text())["passed"]


def test_artifact_without_run_copy_loads_but_verify_asks_for_it(exported: tuple[Path, int, str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    shutil.copytree(exported[0], art)
    shutil.rmtree(art / RUN_DIR)  # shipped for ONNX Runtime / TensorRT only
    Manifest.load(art)  # the graphs' hashes still check out
    assert main(["verify", str(art)]) == 2
    assert "has no run/ copy" in capsys.readouterr().err

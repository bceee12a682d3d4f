"""Unit tests of the export pieces that need no exported run: rewrites, static checks, manifest, sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atld_deploy.errors import EngineError, ExportError
from atld_deploy.export.checks import check_graph
from atld_deploy.export.manifest import FORMAT_VERSION, GraphEntry, Manifest, TensorSpec, input_spec
from atld_deploy.export.parity import step_sign_agreement
from atld_deploy.export.rewrite import conv_transpose_as_conv
from atld_deploy.export.trt import check_engine_sidecar, tensorrt_status
from atld_deploy.io import sha256_file


def _depth_to_space_dcr(y: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = y.shape
    return y.view(b, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c // (s * s), h * s, w * s)


@pytest.mark.parametrize("k,s,p,op", [(3, 1, 1, 0), (1, 1, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0), (5, 1, 2, 0), (3, 3, 0, 0)])
def test_conv_transpose_rewrite_is_exact(k: int, s: int, p: int, op: int) -> None:
    g = torch.Generator().manual_seed(k * 10 + s)
    w, x = torch.randn(6, 5, k, k, generator=g), torch.randn(2, 6, 7, 7, generator=g)
    ref = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op)
    res = conv_transpose_as_conv(w.numpy(), [s, s], [p, p, p, p], [op, op])
    assert res is not None
    w2, pads = res
    y = F.conv2d(F.pad(x, (pads[1], pads[3], pads[0], pads[2])), torch.from_numpy(w2))
    y = _depth_to_space_dcr(y, s) if s > 1 else y
    assert y.shape == ref.shape
    assert (y - ref).abs().max() < 1e-4


@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (4, 2, 1, 0), (3, 3, 0, 0), (2, 2, 0, 0), (5, 2, 2, 1)])
def test_conv_transpose_phases_are_exact(k: int, s: int, p: int, op: int) -> None:
    """The phase convolutions, concatenated and DepthToSpace'd, are the transposed convolution."""
    from atld_deploy.export.rewrite import conv_transpose_phases

    g = torch.Generator().manual_seed(k * 10 + s + p)
    w, x = torch.randn(6, 5, k, k, generator=g), torch.randn(2, 6, 7, 7, generator=g)
    ref = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op)
    phases = conv_transpose_phases(w.numpy(), [s, s], [p, p, p, p], [op, op])
    assert phases is not None and len(phases) == s * s
    taps = sum(int((pw != 0).any(axis=(0, 1)).sum()) for pw, _ in phases)
    assert taps == k * k  # each kernel tap used exactly once: no multiplications by structural zeros
    ys = [F.conv2d(F.pad(x, (pp[1], pp[3], pp[0], pp[2])), torch.from_numpy(pw)) for pw, pp in phases]
    y = _depth_to_space_dcr(torch.cat(ys, dim=1), s)
    assert y.shape == ref.shape
    assert (y - ref).abs().max() < 1e-4
    # the check itself: the phases in the wrong order are not the transposed convolution
    wrong = _depth_to_space_dcr(torch.cat(ys[::-1], dim=1), s)
    assert (wrong - ref).abs().max() > 1e-2


def test_conv_transpose_rewrite_declines_other_sizes() -> None:
    # output != stride * input (stride 2, no output_padding): left as ConvTranspose
    assert conv_transpose_as_conv(np.zeros((4, 4, 3, 3), np.float32), [2, 2], [1, 1, 1, 1], [0, 0]) is None
    # kernel < stride (1x1 stride-2 shortcut): empty phases, ORT's ConvTranspose is cheaper; left as is
    assert conv_transpose_as_conv(np.zeros((4, 4, 1, 1), np.float32), [2, 2], [0, 0, 0, 0], [1, 1]) is None


def _model(nodes: list, inputs: list, outputs: list, inits: list = ()) -> "onnx.ModelProto":  # noqa: F821
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_check_refuses_op_outside_tensorrt_list() -> None:
    from onnx import TensorProto, helper

    m = _model([helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    with pytest.raises(ExportError, match=r"node 'the_hardmax' \(op Hardmax\) is not in TensorRT's ONNX-parser support list"):
        check_graph(m, "tiny")


def test_check_refuses_non_bool_and_and_runtime_axes() -> None:
    from onnx import TensorProto, helper

    and_int = _model([helper.make_node("And", ["a", "b"], ["y"], name="int_and")],
                     [helper.make_tensor_value_info(n, TensorProto.INT32, [2]) for n in "ab"],
                     [helper.make_tensor_value_info("y", TensorProto.BOOL, [2])])
    with pytest.raises((ExportError,), match=r"int_and|ONNX checker"):
        check_graph(and_int, "tiny")
    rm = _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="dyn_axes")],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    with pytest.raises(ExportError, match=r"node 'dyn_axes' \(op ReduceMean\) input 1 'axes' is computed at run time; TensorRT: axes must be an initializer"):
        check_graph(rm, "tiny")


def test_check_refuses_custom_domain_and_bad_opset() -> None:
    from onnx import TensorProto, helper

    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    graph = helper.make_graph([helper.make_node("ConvGrad", ["x"], ["y"], name="ms_grad", domain="com.microsoft")], "g", x, y)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ExportError, match=r"ms_grad.*custom-domain"):
        check_graph(m, "tiny")
    old = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], x, y)
    old.opset_import[0].version = 13
    with pytest.raises(ExportError, match=r"opset 13; TensorRT 10 and 11 both accept 17-20"):
        check_graph(old, "tiny")


def _tiny_onnx(path: Path) -> None:
    """A real one-node ONNX graph (images -> images), so the manifest's graph checks have a graph to read."""
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 8, 8])]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", io,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 8, 8])])
    onnx.save(helper.make_model(graph), str(path))


def _manifest(d: Path) -> Manifest:
    _tiny_onnx(d / "g.onnx")
    spec = TensorSpec("images", "float32", ["batch", 1, 8, 8], "images")
    return Manifest(FORMAT_VERSION, ["a", "b"], input_spec(1, 8, "resize"), {"mode": "plus", "eps": 0.1, "band": [0.3, 0.7], "factor": 0.5},
                    {"classifier": GraphEntry("g.onnx", [spec], [spec], sha256_file(d / "g.onnx"))})


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    m.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == m and loaded.imt_config().eps == 0.1
    assert loaded.graph_path(tmp_path, "classifier") == tmp_path / "g.onnx"
    with pytest.raises(ExportError, match="graph 'pipeline' is not in this artifact"):
        loaded.graph_path(tmp_path, "pipeline")
    with pytest.raises(ExportError, match="does not exist"):
        Manifest.load(tmp_path / "nope")
    (tmp_path / "g.onnx").unlink()
    with pytest.raises(ExportError, match=r"g\.onnx is listed in .* but missing"):
        Manifest.load(tmp_path)
    d = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(dict(d, format_version=99)))
    with pytest.raises(ExportError, match=f"format_version 99, this atld-deploy reads {FORMAT_VERSION}"):
        Manifest.load(tmp_path, check_hashes=False)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="is not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ExportError, match="manifest.json is missing"):
        Manifest.load(tmp_path)


def test_engine_sidecar_mismatch_says_how_to_rebuild(tmp_path: Path) -> None:
    onnx_file = tmp_path / "pipeline.onnx"
    onnx_file.write_bytes(b"v1")
    side = tmp_path / "pipeline.fp32.engine.json"
    side.write_text(json.dumps({"engine": "pipeline.fp32.engine", "onnx_sha256": sha256_file(onnx_file), "tensorrt": "0.0",
                                "gpu": "none", "compute_capability": "0.0"}))
    with pytest.raises(EngineError, match="missing"):
        check_engine_sidecar(tmp_path / "other.json")
    onnx_file.write_bytes(b"v2")
    with pytest.raises(EngineError, match=r"built from an ONNX file with SHA-256 .* rebuild the engines on this machine with `atld-deploy export RUN --output ART --trt`"):
        check_engine_sidecar(side, onnx_file)
    onnx_file.write_bytes(b"v1")
    # Same source: the machine check fails either way (no TensorRT here, or version "0.0" elsewhere).
    expected = r"cannot load engine" if tensorrt_status() else r"was built for tensorrt '0\.0'"
    with pytest.raises(EngineError, match=expected):
        check_engine_sidecar(side, onnx_file)


def test_step_sign_agreement_ignores_tiny_gradients_and_clamped_pixels() -> None:
    x = np.array([[0.5, 0.5, 0.0, 0.5]], np.float32)
    g = np.array([[1.0, -2.0, -1.0, 1e-9]], np.float32)
    x_t = np.array([[0.6, 0.4, 0.0, 0.4]], np.float32)  # last pixel flipped, but |g| is in the band
    agree, excluded = step_sign_agreement(x, x_t, g)
    assert agree == 1.0 and excluded == 0.5
    agree, _ = step_sign_agreement(x, np.array([[0.4, 0.4, 0.0, 0.5]], np.float32), g)
    assert agree == 0.5


def test_graph_rewrites_keep_the_function() -> None:
    """Where(LessOrEqual(r,0),0,g) -> Mul(g, mask); Mul(t, s) -> scaled Conv weights; ConvTranspose -> Conv."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from atld_deploy.export.rewrite import optimize_graph

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(rng.normal(size=(1, 4, 1, 1)).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "wt"),
    ]
    nodes = [
        helper.make_node("Relu", ["r_in"], ["r"], name="relu"),
        helper.make_node("LessOrEqual", ["r", "zero"], ["le"], name="le"),
        helper.make_node("Where", ["le", "zero", "g"], ["masked"], name="where"),
        helper.make_node("Mul", ["masked", "scale"], ["scaled"], name="bn_scale"),
        helper.make_node("ConvTranspose", ["scaled", "wt"], ["y"], name="convt", strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1], kernel_shape=[3, 3]),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4, 5, 5]) for n in ("r_in", "g")]
    model = helper.make_model(helper.make_graph(nodes, "g", vi, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 10, 10])], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    feed = {"r_in": rng.normal(size=(2, 4, 5, 5)).astype(np.float32), "g": rng.normal(size=(2, 4, 5, 5)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    applied = optimize_graph(model)
    assert applied[:3] == ["ConvTranspose->Conv(+DepthToSpace) x1", "ReLU-backward Where->Mul(mask) x1", "channel-scale Mul folded into Conv weights x1"]
    onnx.checker.check_model(model, full_check=True)
    # 4 channels: the mask stays Greater+Cast (no blocked layout to keep); the stride-2 ConvTranspose is 4 phases
    assert sorted(n.op_type for n in model.graph.node) == [
        "Cast", "Concat", "Conv", "Conv", "Conv", "Conv", "DepthToSpace", "Greater", "Mul", "Relu"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(after - before).max() < 1e-5


@pytest.mark.parametrize("n,rate", [(40, 1e-3), (320, 1e-3), (400, 1 / 402), (400, 6 / 402), (112, 0.05)])
def test_label_bar_is_a_binomial_bound_three_flips_above_the_expected(n: int, rate: float) -> None:
    from scipy.stats import binom

    from atld_deploy.export.parity import ALPHA, binomial_bar

    bar = binomial_bar(n, rate)
    assert bar >= n * rate + 3  # one flip, or two, never decides
    assert binom.sf(bar, n, rate) <= ALPHA  # a correct graph exceeds it with probability <= 0.1%


def _logits(n: int, flips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference logits with clear winners, and a copy whose first `flips` labels changed."""
    ref = np.random.default_rng(seed).normal(size=(n, 10)).astype(np.float32)
    ref[np.arange(n), np.arange(n) % 10] += 6.0
    got = ref.copy()
    got[np.arange(flips), (np.arange(flips) + 1) % 10] += 12.0
    return ref, got


def test_labels_are_held_to_the_stated_bar_and_fail_one_flip_beyond() -> None:
    from atld_deploy.export.parity import THRESHOLDS, ParityReport, binomial_bar, compare, floor_label_rate

    bar32 = binomial_bar(400, THRESHOLDS["fp32"].label_rate)
    ref, ok = _logits(400, bar32)
    _, bad = _logits(400, bar32 + 1)
    passed = compare("classifier", "onnxruntime", "fp32", {"logits": ref}, {"logits": ok}, None)
    assert passed.label_bar == bar32 and passed.label_flips == bar32
    assert not [f for f in passed.failures if f.startswith("labels")]  # the flipped logits also break the error bound
    failed = compare("classifier", "onnxruntime", "fp32", {"logits": ref}, {"logits": bad}, None)
    assert any(f"labels differ on {bar32 + 1} of 400 images > {bar32} allowed" in f for f in failed.failures)
    # float16: the bar comes from the floor's flips on the same images; without a floor there is no bar
    _, floor = _logits(400, 2)
    assert floor_label_rate(2, 400) == 2 * 3 / 402  # twice the floor's Laplace rate: activations round too
    bar16 = binomial_bar(400, floor_label_rate(2, 400))
    ref, ok = _logits(400, bar16)
    _, bad = _logits(400, bar16 + 1)
    res = compare("classifier", "onnxruntime", "fp16", {"logits": ref}, {"logits": ok}, None, floor={"logits": floor})
    assert res.floor_label_flips == 2 and res.label_bar == bar16 >= 2 + 3
    assert not [f for f in res.failures if f.startswith("labels")]
    res = compare("classifier", "onnxruntime", "fp16", {"logits": ref}, {"logits": bad}, None, floor={"logits": floor})
    assert any(f.startswith(f"labels differ on {bar16 + 1} of 400") for f in res.failures)
    assert "floor flips 2/400 labels; bars derived from it" in ParityReport([res], {}).table()
    res = compare("classifier", "onnxruntime", "fp16", {"logits": ref}, {"logits": ok}, None)
    assert "fp16 labels have no floor to be judged against" in res.failures


def test_float16_error_bound_follows_the_floor() -> None:
    from atld_deploy.export.parity import compare

    ref = np.full((100, 10), 2.0, np.float32)
    ref[:, 0] = 5.0
    floor = {"logits": ref + 2e-3}  # the float16 weights alone move every logit by 2e-3
    within = compare("classifier", "onnxruntime", "fp16", {"logits": ref}, {"logits": ref + 15e-3}, None, floor=floor)
    assert within.passed and within.outputs["logits"].bar == pytest.approx(16e-3, rel=1e-3)  # below 1e-2 x max(1, |ref|) = 0.05
    beyond = compare("classifier", "onnxruntime", "fp16", {"logits": ref}, {"logits": ref + 17e-3}, None, floor=floor)
    assert any(f.startswith("logits: mean |err| 0.017 > 8 x the float16-weight floor's 0.002") for f in beyond.failures)


def test_sign_share_bar_is_the_stated_bound() -> None:
    from atld_deploy.export.parity import share_bar

    assert share_bar(0.02, 400) == pytest.approx(0.02 + 3.0902 * 2 * np.sqrt(0.02 * 0.98 / 400), rel=1e-4)
    assert share_bar(0.0, 400) == pytest.approx(3.0902 * 2 * np.sqrt((1 / 400) * (1 - 1 / 400) / 400), rel=1e-4)


def _step_case(mode: str = "plus") -> tuple[np.ndarray, np.ndarray, np.ndarray, "IMTConfig"]:  # noqa: F821
    """Four examples of 32 pixels: p_natural 0.1 and 0.9 (outside the band), 0.5 (inside), 0.3001 (at an edge)."""
    from atld_deploy.imt import IMTConfig

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 1, 4, 8)).astype(np.float32)
    x[:, 0, 0, :4] = [0.0, 1.0, 0.02, 0.99]  # pixels the clamp pins or cuts short
    g = rng.normal(size=x.shape).astype(np.float32)
    return x, g, np.array([0.1, 0.9, 0.5, 0.3001], np.float32), IMTConfig(mode=mode, eps=0.1, band=(0.3, 0.7), factor=0.5)


def _stepped(x: np.ndarray, g: np.ndarray, m: list[float], eps: float = 0.1, clamp: bool = True) -> np.ndarray:
    x_t = x + np.array(m, np.float32).reshape(-1, 1, 1, 1) * np.float32(eps) * np.sign(g)
    return np.clip(x_t, 0, 1) if clamp else x_t


def test_step_check_accepts_the_exact_step_and_a_band_edge() -> None:
    from atld_deploy.export.step import check_step

    x, g, p, cfg = _step_case()
    exact = check_step(x, _stepped(x, g, [1, 1, 0.5, 0.5]), g, p, p, cfg)
    assert exact.failures() == [] and exact.examples_in_band == 2 and exact.pixels_checked > 100
    # example 3 sits 1e-4 inside the band's low edge: a graph whose own p_natural is 0.2999 may step as
    # outside the band; one whose p_natural equals the reference's may not
    p_graph = p.copy()
    p_graph[3] = 0.2999
    crossed = check_step(x, _stepped(x, g, [1, 1, 0.5, 1]), g, p, p_graph, cfg)
    assert crossed.failures() == [] and crossed.examples_near_edge == 1
    same_p = check_step(x, _stepped(x, g, [1, 1, 0.5, 1]), g, p, p, cfg)
    assert same_p.examples_other_band == 1 and "1 examples took the other band's step" in same_p.failures()[0]


@pytest.mark.parametrize("m,clamp,expected", [
    ([0.75, 0.75, 0.375, 0.375], True, r"differs from m x eps on \d+ of \d+ checked pixels in 4 examples"),
    ([1, 1, 1, 1], True, r"2 examples took the other band's step"),  # IMT+ band ignored
    ([1, 1, 0.75, 0.75], True, r"differs from m x eps .* in 2 examples"),  # factor 0.75
    ([1, 1, 0.5, 0.5], False, r"pixels lie outside \[0, 1\] .*not clamped"),
    ([0.5, 0.5, 0.25, 0.25], True, r"2 examples took the other band's step"),  # step x0.5
])
def test_step_check_rejects_a_wrong_step(m: list[float], clamp: bool, expected: str) -> None:
    import re

    from atld_deploy.export.step import check_step

    x, g, p, cfg = _step_case()
    failures = check_step(x, _stepped(x, g, m, clamp=clamp), g, p, p, cfg).failures()
    assert any(re.search(expected, f) for f in failures), failures


def test_step_check_in_plain_and_off_modes() -> None:
    from atld_deploy.export.step import check_step

    x, g, p, plain = _step_case("plain")
    assert check_step(x, _stepped(x, g, [1, 1, 1, 1]), g, p, p, plain).failures() == []
    assert check_step(x, _stepped(x, g, [1, 1, 0.5, 1]), g, p, p, plain).pixels_wrong > 0
    _, _, _, off = _step_case("off")
    assert check_step(x, x.copy(), g, p, p, off).failures() == []
    assert check_step(x, _stepped(x, g, [1, 1, 1, 1]), g, p, p, off).pixels_wrong > 0


def test_a_pipeline_without_its_transformed_images_fails_unless_it_is_an_engine() -> None:
    from atld_deploy.export.parity import compare

    x, g, p, cfg = _step_case()
    logits = np.eye(10, dtype=np.float32)[[0, 1, 2, 3]] * 5
    ref = {"logits": logits, "p_natural": p, "images_imt": _stepped(x, g, [1, 1, 0.5, 0.5]), "imt_gradient": g}
    got = {"logits": logits, "p_natural": p}
    onnx_graph = compare("pipeline", "onnxruntime", "fp32", ref, got, x, cfg)
    assert any(f.startswith("images_imt has shape ()") and f.endswith("the IMT step cannot be checked")
               for f in onnx_graph.failures)
    engine = compare("pipeline", "tensorrt", "fp32", ref, got, x, cfg, expect_step=False)
    assert engine.passed and engine.step is None and "the step unchecked" in engine.notes[0]
    complete = compare("pipeline", "onnxruntime", "fp32", ref, dict(got, images_imt=ref["images_imt"]), x, cfg)
    assert complete.passed and complete.step is not None and complete.sign_agreement == 1.0

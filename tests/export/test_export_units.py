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


def _manifest(d: Path) -> Manifest:
    (d / "g.onnx").write_bytes(b"graph")
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
    with pytest.raises(EngineError, match=r"built from an ONNX file with SHA-256 .* rebuild the engines on this machine"):
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
    assert applied == ["ConvTranspose->Conv(+DepthToSpace) x1", "ReLU-backward Where->Mul(mask) x1", "channel-scale Mul folded into Conv weights x1"]
    onnx.checker.check_model(model, full_check=True)
    assert sorted(n.op_type for n in model.graph.node) == ["Cast", "Conv", "DepthToSpace", "Greater", "Mul", "Relu"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(after - before).max() < 1e-5


def test_labels_are_judged_on_real_images_and_random_ones_reported() -> None:
    from atld_deploy.export.parity import compare

    ref = np.zeros((20, 10), np.float32)
    ref[np.arange(16), np.arange(16) % 10] = 3.0  # 16 real images: clear winners
    ref[16:, 0] = 0.01  # 4 random images: near ties between classes 0 and 1
    got = {"logits": ref.copy()}
    got["logits"][17:, 1] = 0.02  # 3 of them flip, by an error far inside the float16 bound
    res = compare("pipeline_fp16", "onnxruntime", "fp16", {"logits": ref}, got, None, n_real=16)
    assert res.passed and res.label_agreement == 1.0 and res.label_scope == "real test images"
    assert res.label_agreement_random == 0.25
    alone = compare("pipeline_fp16", "onnxruntime", "fp16", {"logits": ref}, got, None, n_real=0)  # no real images
    assert alone.label_scope == "all images" and alone.label_agreement == 17 / 20
    assert not alone.passed and "labels agree on 85.00% < 99.0% (all images)" in alone.failures[0]
    strict = compare("pipeline", "onnxruntime", "fp32", {"logits": ref}, got, None, n_real=16)  # fp32: all judged
    assert strict.label_scope == "all images" and not strict.passed
    got["logits"][0, 5] = 3.5  # a real image flips: judged, fails
    assert not compare("pipeline_fp16", "onnxruntime", "fp16", {"logits": ref}, got, None, n_real=16).passed

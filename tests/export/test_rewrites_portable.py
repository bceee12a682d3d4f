"""The rewrites that make the graphs portable (and cheaper) keep the function; the demo-sized pipeline computes
the same outputs in ONNX Runtime, the ONNX reference evaluator and OpenVINO."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from atld_deploy.export.engines import compare_engines, judge, parse_engines
from atld_deploy.export.portable import fold_constant_transposes, gather_scalar_as_slice, where_constant_mask_as_mul
from atld_deploy.export.rewrite import distribute_channel_scales, fold_channel_scales, optimize_graph

RNG = np.random.default_rng(0)


def _model(nodes: list, inputs: dict, outputs: dict, inits: list) -> "onnx.ModelProto":  # noqa: F821
    vi_in = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    vi_out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()]
    return helper.make_model(helper.make_graph(nodes, "g", vi_in, vi_out, inits), opset_imports=[helper.make_opsetid("", 18)])


def _run(model: "onnx.ModelProto", feeds: dict) -> list[np.ndarray]:  # noqa: F821
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(model: "onnx.ModelProto") -> list[str]:  # noqa: F821
    return sorted(n.op_type for n in model.graph.node)


def test_constant_transposes_fold_into_initializers_bit_exactly() -> None:
    """The OpenVINO shape: one square W feeding MatMul(x, W) and MatMul(z, Transpose(W))."""
    w = numpy_helper.from_array(RNG.normal(size=(5, 5)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["z", "wt"], ["b"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),  # a runtime tensor: stays
    ]
    model = _model(nodes, {"x": [3, 5], "z": [3, 5]}, {"a": [3, 5], "b": [3, 5], "xt": [5, 3]}, [w])
    feeds = {k: RNG.normal(size=(3, 5)).astype(np.float32) for k in ("x", "z")}
    before = _run(model, feeds)
    assert fold_constant_transposes(model) == 1
    after = _run(model, feeds)
    assert _ops(model) == ["MatMul", "MatMul", "Transpose"]
    assert all(np.array_equal(u, v) for u, v in zip(before, after))
    assert np.array_equal(after[1], feeds["z"] @ numpy_helper.to_array(w).T)


def test_constant_mask_where_becomes_a_mul_without_bool_initializers() -> None:
    """Where(C, Expand(a, S), Expand(0, S)), C a one-hot BOOL initializer (a select's backward)."""
    cond = numpy_helper.from_array(np.array([[True, False, False, True]]), "cond")
    inits = [cond, numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([2, 4], np.int64), "shape")]
    nodes = [
        helper.make_node("Expand", ["a", "shape"], ["a4"]),
        helper.make_node("Expand", ["zero", "shape"], ["z4"]),
        helper.make_node("Where", ["cond", "a4", "z4"], ["y"]),
        helper.make_node("Greater", ["b", "zero"], ["pos"]),  # a computed condition: stays a Where
        helper.make_node("Where", ["pos", "b", "zero"], ["y2"]),
    ]
    model = _model(nodes, {"a": [2, 1], "b": [2, 4]}, {"y": [2, 4], "y2": [2, 4]}, inits)
    feeds = {"a": RNG.normal(size=(2, 1)).astype(np.float32), "b": RNG.normal(size=(2, 4)).astype(np.float32)}
    before = _run(model, feeds)
    assert where_constant_mask_as_mul(model) == 1
    after = _run(model, feeds)
    assert all(np.array_equal(u, v) for u, v in zip(before, after))
    assert not [i.name for i in model.graph.initializer if i.data_type == TensorProto.BOOL]
    assert _ops(model) == ["Expand", "Greater", "Mul", "Where"]


@pytest.mark.parametrize("shared", [False, True])
def test_scalar_gather_keeps_the_rank_and_drops_unused_gemm_columns(shared: bool) -> None:
    """Gather(Gemm(x), 0, axis 1) -> [N]: a one-column Gemm + Squeeze, or Slice + Squeeze when the Gemm's
    other columns are an output too (the discriminator graph's class_logits)."""
    import onnx

    inits = [numpy_helper.from_array(RNG.normal(size=(6, 4)).astype(np.float32), "wg"),
             numpy_helper.from_array(RNG.normal(size=(4,)).astype(np.float32), "bg"),
             numpy_helper.from_array(np.array(0, np.int64), "k")]
    nodes = [helper.make_node("Gemm", ["x", "wg", "bg"], ["full"]), helper.make_node("Gather", ["full", "k"], ["y"], axis=1)]
    outputs = {"y": ["n"], **({"full": ["n", 4]} if shared else {})}
    model = _model(nodes, {"x": ["n", 6]}, outputs, inits)
    feeds = {"x": RNG.normal(size=(3, 6)).astype(np.float32)}
    before = _run(model, feeds)
    assert gather_scalar_as_slice(model) == 1
    after = _run(model, feeds)
    assert _ops(model) == (["Gemm", "Slice", "Squeeze"] if shared else ["Gemm", "Squeeze"])
    assert after[0].shape == (3,) and np.allclose(after[0], before[0], rtol=0, atol=1e-6)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    y = next(v for v in list(inferred.graph.value_info) + list(inferred.graph.output) if v.name == "y")
    assert len(y.type.tensor_type.shape.dim) == 1


def _conv_block(same_scale: bool) -> tuple["onnx.ModelProto", dict]:  # noqa: F821
    """Add(Mul(a, s), Mul(b, s2)) read by a Conv, and Mul(a, s) read by another Conv (a residual stage's
    backward); s2 holds the same values as s, or others."""
    s = RNG.normal(size=(1, 4, 1, 1)).astype(np.float32)
    s2 = s.copy() if same_scale else RNG.normal(size=(1, 4, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(s, "s"), numpy_helper.from_array(s2, "s2"),
             numpy_helper.from_array(RNG.normal(size=(3, 4, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(RNG.normal(size=(3, 4, 3, 3)).astype(np.float32), "w2")]
    nodes = [
        helper.make_node("Mul", ["a", "s"], ["as"]), helper.make_node("Mul", ["b", "s2"], ["bs"]),
        helper.make_node("Add", ["as", "bs"], ["sum"]),
        helper.make_node("Conv", ["sum", "w1"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["as", "w2"], ["y2"], pads=[1, 1, 1, 1]),
    ]
    shape = [2, 4, 5, 5]
    model = _model(nodes, {"a": shape, "b": shape}, {"y1": [2, 3, 5, 5], "y2": [2, 3, 5, 5]}, inits)
    return model, {k: RNG.normal(size=shape).astype(np.float32) for k in ("a", "b")}


def test_a_shared_channel_scale_moves_after_the_add_and_folds_into_the_convolutions() -> None:
    model, feeds = _conv_block(same_scale=True)
    before = _run(model, feeds)
    assert distribute_channel_scales(model) == 1
    assert fold_channel_scales(model) == 2
    after = _run(model, feeds)
    assert _ops(model) == ["Add", "Conv", "Conv"]
    for u, v in zip(before, after):
        assert np.abs(u - v).max() <= 1e-5 * max(1.0, np.abs(u).max())


def test_different_channel_scales_are_left_alone() -> None:
    model, _ = _conv_block(same_scale=False)
    assert distribute_channel_scales(model) == 0
    assert _ops(model) == ["Add", "Conv", "Conv", "Mul", "Mul"]


def test_engine_judgement_rejects_a_wrong_shape_and_a_wrong_value() -> None:
    ref = {"logits": np.ones((4, 3), np.float32), "p_natural": np.full(4, 0.5, np.float32)}
    assert judge("reference", ref, ref, 1e-3).passed
    wrong_shape = judge("opencv", {**ref, "p_natural": ref["p_natural"][:, None]}, ref, 1e-3)
    assert wrong_shape.failures == ["p_natural: shape [4, 1], expected [4]"]
    wrong_value = judge("openvino", {**ref, "logits": ref["logits"] + 2e-3}, ref, 1e-3)
    assert not wrong_value.passed and wrong_value.failures[0].startswith("logits: max |err| 2.00e-03")
    nan = judge("openvino", {**ref, "logits": ref["logits"] * np.nan}, ref, 1e-3)
    assert not nan.passed


def test_engine_names_are_checked() -> None:
    from atld_deploy.errors import ConfigError

    assert parse_engines("onnxruntime, openvino") == ("onnxruntime", "openvino")
    with pytest.raises(ConfigError, match="--engines got tensorflow"):
        parse_engines("onnxruntime,tensorflow")


@pytest.fixture(scope="module")
def demo_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's shapes (digits 8x8x1, WRN-10-2, discriminator WRN-28-5 body), random weights: the IMT+
    pipeline as traced ("naive") and after `optimize_graph` ("pipeline"), with images_imt exposed."""
    import onnx

    from atld_deploy.config import make_config
    from atld_deploy.export.trace import PipelineFunction, export_onnx
    from atld_deploy.imt import IMTConfig
    from atld_deploy.models import create_discriminator, create_model

    cfg = make_config("digits")
    torch.manual_seed(0)
    f = create_model(cfg.arch, 10, in_channels=1).eval()
    d = create_discriminator(10, cfg.d_depth, cfg.d_widen).eval()
    out = tmp_path_factory.mktemp("portable")
    export_onnx(PipelineFunction(f, d, IMTConfig(mode="plus", eps=cfg.eps), emit_transformed=True), torch.rand(2, 1, 8, 8),
                "images", ["logits", "p_natural", "images_imt"], out / "naive.onnx", 18)
    model = onnx.load(str(out / "naive.onnx"))
    optimize_graph(model)
    onnx.save(model, str(out / "pipeline.onnx"))
    return {"naive": out / "naive.onnx", "pipeline": out / "pipeline.onnx"}


FEEDS = {"images": np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)}


def test_demo_pipeline_agrees_with_the_reference_evaluator(demo_graphs: dict[str, Path]) -> None:
    (result,) = compare_engines(demo_graphs["pipeline"], FEEDS, ["reference"])
    assert result.passed, result.failures
    assert set(result.max_abs_err) == {"logits", "p_natural", "images_imt"}


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino wheel is not installed")
def test_demo_pipeline_agrees_with_openvino_only_after_the_rewrites(demo_graphs: dict[str, Path]) -> None:
    """As traced, OpenVINO drops the backward Transposes and gets the logits wrong; the rewritten graph matches."""
    (naive,) = compare_engines(demo_graphs["naive"], FEEDS, ["openvino"])
    assert any(f.startswith("logits: max |err|") for f in naive.failures)
    (rewritten,) = compare_engines(demo_graphs["pipeline"], FEEDS, ["openvino"])
    assert rewritten.passed, rewritten.failures


def test_an_artifacts_graphs_agree_on_the_reference_evaluator(tiny_artifacts: Path) -> None:
    """What `verify --engines` runs: every graph of a real export, each output judged against ONNX Runtime."""
    from atld_deploy.export.engines import check_artifact_engines, format_engine_table

    results = check_artifact_engines(tiny_artifacts, "reference")
    assert set(results) >= {"classifier", "discriminator", "pipeline"}
    for graph, (reference,) in results.items():
        assert reference.passed and reference.max_abs_err, (graph, reference.failures)
    table = format_engine_table(results).splitlines()
    assert len(table) == len(results) and all(" agrees (max |err| " in line for line in table)

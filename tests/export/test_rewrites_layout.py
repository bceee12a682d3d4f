"""The rewrites that keep the input-gradient pass in ONNX Runtime's blocked layout compute the same values."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from atld_deploy.export.layout import fold_strided_shortcuts, relu_masks_as_convolutions
from atld_deploy.export.rewrite import optimize_graph

C = 16


def _run(model: "onnx.ModelProto", feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _mask_model(elem: int) -> "onnx.ModelProto":
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    nodes = [helper.make_node("Greater", ["r", "zero"], ["pos"]), helper.make_node("Cast", ["pos"], ["mask"], to=elem),
             helper.make_node("Mul", ["g", "mask"], ["out"])]
    vi = [helper.make_tensor_value_info(n, elem, [1, C, 1, 12]) for n in ("r", "g")]
    graph = helper.make_graph(nodes, "m", vi, [helper.make_tensor_value_info("out", elem, [1, C, 1, 12])],
                              [numpy_helper.from_array(np.array(0, dtype), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# every kind of value a ReLU input or output holds, down to float32's smallest normal number and 2^-127
EDGES = [0.0, -0.0, 2.0 ** -127, 2.0 ** -126, 1e-30, 1e-8, 1.0, 3e38, np.inf, -2.0 ** -149, -1.0, -3e38]


def _edges() -> tuple[np.ndarray, np.ndarray]:
    r = np.tile(np.array(EDGES, np.float32), (1, C, 1, 1)).reshape(1, C, 1, 12)
    return r, np.random.default_rng(0).normal(size=r.shape).astype(np.float32)


def test_relu_mask_as_convolution_is_exact_at_every_edge() -> None:
    r, g = _edges()
    model = _mask_model(TensorProto.FLOAT)
    (before,) = _run(model, {"r": r, "g": g})
    assert relu_masks_as_convolutions(model) == 1
    assert sorted(n.op_type for n in model.graph.node) == ["Clip", "Conv", "Mul"]
    (after,) = _run(model, {"r": r, "g": g})
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after, g * (r > 0))


def test_a_too_small_mask_scale_is_caught_by_the_edge_values() -> None:
    """The check above fails a scale (2^30) that leaves tiny normal activations with a fraction of a mask."""
    r, g = _edges()
    model = _mask_model(TensorProto.FLOAT)
    relu_masks_as_convolutions(model, scale=2.0 ** 30)
    (after,) = _run(model, {"r": r, "g": g})
    assert not np.array_equal(after, g * (r > 0))


def test_only_subnormals_below_two_to_the_minus_127_get_a_fraction() -> None:
    """The documented limit: 2^-149 (float32's smallest subnormal) is scaled to 2^-22, not 1."""
    r = np.full((1, C, 1, 12), 2.0 ** -149, np.float32)
    model = _mask_model(TensorProto.FLOAT)
    relu_masks_as_convolutions(model)
    (after,) = _run(model, {"r": r, "g": np.ones_like(r)})
    assert np.all(after == np.float32(2.0 ** -22))


def test_float16_masks_are_left_alone() -> None:
    """2^127 is out of float16's range, and ONNX Runtime's blocked layout is float32 only."""
    model = _mask_model(TensorProto.FLOAT16)
    assert relu_masks_as_convolutions(model) == 0
    assert sorted(n.op_type for n in model.graph.node) == ["Cast", "Greater", "Mul"]


def test_masks_on_tensors_without_a_channel_block_are_left_alone() -> None:
    model = _mask_model(TensorProto.FLOAT)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[1].dim_value = 12
    assert relu_masks_as_convolutions(model) == 0
    assert sorted(n.op_type for n in model.graph.node) == ["Cast", "Greater", "Mul"]


def _stage_model(shortcut_pads: list[int], shortcut_op: list[int]) -> "onnx.ModelProto":
    """The backward of a stride-2 residual stage: ConvT_3x3_s2(g1) + ConvT_1x1_s2(g2)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(32, C, 3, 3)).astype(np.float32), "w3"),
             numpy_helper.from_array(rng.normal(size=(32, C, 1, 1)).astype(np.float32), "w1")]
    nodes = [
        helper.make_node("ConvTranspose", ["g1", "w3"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("ConvTranspose", ["g2", "w1"], ["b"], strides=[2, 2], pads=shortcut_pads,
                         output_padding=shortcut_op, kernel_shape=[1, 1]),
        helper.make_node("Add", ["a", "b"], ["grad"]),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 32, 6, 6]) for n in ("g1", "g2")]
    graph = helper.make_graph(nodes, "s", vi, [helper.make_tensor_value_info("grad", TensorProto.FLOAT, [2, C, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_strided_shortcut_folds_into_the_first_phase_exactly() -> None:
    rng = np.random.default_rng(2)
    feed = {k: rng.normal(size=(2, 32, 6, 6)).astype(np.float32) for k in ("g1", "g2")}
    model = _stage_model([0, 0, 0, 0], [1, 1])
    (before,) = _run(model, feed)
    applied = optimize_graph(model)
    assert "strided 1x1 shortcut folded into its stage's first phase x1" in applied
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 1
    assert model.graph.node[-1].output[0] == "grad"
    (after,) = _run(model, feed)
    assert np.abs(after - before).max() < 1e-4 * np.abs(before).max()


def test_a_shortcut_read_elsewhere_is_not_folded() -> None:
    """Folding removes the shortcut's own output; when another node or the graph reads it, it stays."""
    model = _stage_model([0, 0, 0, 0], [1, 1])
    model.graph.output.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, C, 12, 12]))
    from atld_deploy.export.rewrite import rewrite_conv_transpose

    rewrite_conv_transpose(model)
    assert fold_strided_shortcuts(model) == 0
    assert [n.op_type for n in model.graph.node].count("ConvTranspose") == 1

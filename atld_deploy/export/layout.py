"""Exact rewrites that keep the input-gradient pass in ONNX Runtime's blocked (NCHWc) CPU layout.

ONNX Runtime runs convolutions on CPU in a blocked channel layout and converts a tensor back to plain NCHW
(a `ReorderOutput`, a full copy) for every reader that has no blocked kernel. In the backward half of the
pipeline those readers are the ReLU-backward masks (`Greater`, `Cast`) and the 1x1 stride-2 shortcut's
`ConvTranspose`; both are rewritten here into ops that have blocked kernels, with the same values:

- `Cast(Greater(r, 0))` on a float32 4-D activation becomes `Clip(Conv(r, W = 2^127, depthwise 1x1), 0, 1)`,
  which ONNX Runtime fuses into one blocked convolution. Scaling by a power of two rounds nothing, so every
  r >= 2^-127 (every normal float and more) maps to exactly 1 and every r <= 0 to exactly 0; an overflow to
  +inf still clamps to 1. Only subnormals below 2^-127 get a fraction -- values that engines flushing
  subnormals to zero (OpenVINO's CPU plugin, GPU fast-math) already read as 0. The scale is a single constant,
  so an engine that folds it into the clamp cannot overflow it. It is out of float16's range: float16 graphs
  keep Greater+Cast, and the float32 graph must not be converted to float16 (pipeline_fp16 is that graph).
- `Add(DepthToSpace(Concat(phase convs)), ConvTranspose_1x1_stride_s(g))` -- a residual stage's strided
  branch and its shortcut, both read by the same gradient -- becomes the shortcut's 1x1 Conv added to the
  first phase's Conv (the only phase a 1x1 stride-s transposed convolution writes), ahead of the Concat.
"""

from __future__ import annotations

import logging

import numpy as np

from .rewrite import float_zeros, replace_nodes

log = logging.getLogger(__name__)

MASK_SCALE = 2.0 ** 127  # the largest power of two float32 holds: r >= 1 / MASK_SCALE maps to exactly 1
BLOCK = 16  # channels per block of ONNX Runtime's widest NCHWc layout; other counts stay as they are


def _shapes(model: "onnx.ModelProto") -> dict[str, list[int | None]]:  # noqa: F821
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(g.value_info) + list(g.input) + list(g.output)}


def relu_masks_as_convolutions(model: "onnx.ModelProto", scale: float = MASK_SCALE) -> int:  # noqa: F821
    """Replace `Cast(Greater(r, 0))` (r a float32 4-D tensor with a multiple of 16 channels) by a depthwise
    Conv and a Clip that compute the same 0/1 mask. Returns the number of masks rewritten.

    `scale` exists for the test that shows a too-small scale is caught.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    zeros = float_zeros(graph)
    producer = {o: n for n in graph.node for o in n.output}
    shapes = _shapes(model)
    new_nodes = []
    count = 0
    bounds = {"lo": f"{graph.name}__mask_lo", "hi": f"{graph.name}__mask_hi"}
    for node in graph.node:
        gt = producer.get(node.input[0]) if node.op_type == "Cast" else None
        to = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
        shape = shapes.get(gt.input[0]) if gt is not None and gt.op_type == "Greater" and gt.input[1] in zeros else None
        if shape is None or to != TensorProto.FLOAT or len(shape) != 4 or not shape[1] or shape[1] % BLOCK:
            new_nodes.append(node)
            continue
        channels = shape[1]
        base = node.name or node.output[0]
        w_name = f"{base}__mask_scale"
        graph.initializer.append(numpy_helper.from_array(np.full((channels, 1, 1, 1), scale, dtype=np.float32), w_name))
        new_nodes += [
            helper.make_node("Conv", [gt.input[0], w_name], [f"{base}__scaled"], name=f"{base}__mask_conv",
                             kernel_shape=[1, 1], group=channels, strides=[1, 1], pads=[0, 0, 0, 0]),
            helper.make_node("Clip", [f"{base}__scaled", bounds["lo"], bounds["hi"]], [node.output[0]], name=f"{base}__mask"),
        ]
        count += 1
    if count:
        graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), bounds["lo"]),
                                  numpy_helper.from_array(np.array(1.0, np.float32), bounds["hi"])])
    replace_nodes(model, new_nodes)
    log.debug("rewrote %d ReLU-backward masks as depthwise convolutions", count)
    return count


def fold_strided_shortcuts(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Fold `ConvTranspose_1x1_stride_s(g)` added to a phase-split strided transposed convolution into that
    convolution's first phase. Returns the number of shortcuts folded.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    for out in graph.output:  # a graph output is a reader that must keep its tensor
        readers[out.name] = readers.get(out.name, 0) + 1
    shapes = _shapes(model)

    def attrs(node: "onnx.NodeProto") -> dict:  # noqa: F821
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def phase_split(name: str) -> tuple["onnx.NodeProto", "onnx.NodeProto", int] | None:  # noqa: F821
        d2s = producer.get(name)
        if d2s is None or d2s.op_type != "DepthToSpace" or attrs(d2s).get("mode", b"DCR") not in (b"DCR", "DCR"):
            return None
        s = int(attrs(d2s)["blocksize"])
        cat = producer.get(d2s.input[0])
        if cat is None or cat.op_type != "Concat" or len(cat.input) != s * s or readers.get(d2s.input[0]) != 1:
            return None
        first = producer.get(cat.input[0])
        if first is None or first.op_type != "Conv" or readers.get(cat.input[0]) != 1:
            return None
        return cat, first, s

    def shortcut(name: str, s: int) -> "onnx.NodeProto | None":  # noqa: F821
        ct = producer.get(name)
        if ct is None or ct.op_type != "ConvTranspose" or len(ct.input) != 2 or ct.input[1] not in inits:
            return None
        a = attrs(ct)
        ok = (list(a.get("strides", [1, 1])) == [s, s] and list(a.get("pads", [0, 0, 0, 0])) == [0, 0, 0, 0]
              and list(a.get("output_padding", [0, 0])) == [s - 1, s - 1] and a.get("group", 1) == 1
              and list(a.get("dilations", [1, 1])) == [1, 1] and "output_shape" not in a
              and tuple(inits[ct.input[1]].dims[2:]) == (1, 1))
        return ct if ok else None

    replaced: dict[str, list] = {}  # an Add's output -> the nodes that now compute it, in its place
    drop: set[str] = set()  # outputs of the Concat and DepthToSpace nodes moved there
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for a, b in ((0, 1), (1, 0)):
            split = phase_split(node.input[a])
            ct = shortcut(node.input[b], split[2]) if split else None
            if ct is None or readers.get(node.input[b]) != 1 or readers.get(node.input[a]) != 1:
                continue
            cat, first, s = split
            if shapes.get(first.output[0]) is None or shapes.get(ct.input[0]) is None \
                    or shapes[first.output[0]][2:] != shapes[ct.input[0]][2:]:
                continue
            base = node.name or node.output[0]
            w = numpy_helper.to_array(inits[ct.input[1]]).transpose(1, 0, 2, 3)  # [C_out, C_in, 1, 1]
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), f"{base}__shortcut_w"))
            d2s = producer[node.input[a]]
            replaced[node.output[0]] = [
                helper.make_node("Conv", [ct.input[0], f"{base}__shortcut_w"], [f"{base}__shortcut"],
                                 name=f"{base}__shortcut_conv", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0]),
                helper.make_node("Add", [first.output[0], f"{base}__shortcut"], [f"{base}__phase0"],
                                 name=f"{base}__phase0_sum"),
                helper.make_node("Concat", [f"{base}__phase0", *cat.input[1:]], [cat.output[0]], name=cat.name, axis=1),
                helper.make_node("DepthToSpace", [cat.output[0]], [node.output[0]], name=d2s.name, blocksize=s, mode="DCR"),
            ]
            drop.update({cat.output[0], d2s.output[0]})
            break
    new_nodes = []
    for node in graph.node:
        if node.output and node.output[0] in replaced:
            new_nodes += replaced[node.output[0]]
        elif not (node.output and node.output[0] in drop):
            new_nodes.append(node)
    replace_nodes(model, new_nodes)
    log.debug("folded %d strided 1x1 shortcuts into their stage's first phase", len(replaced))
    return len(replaced)

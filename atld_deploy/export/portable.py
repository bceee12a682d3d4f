"""Exact rewrites that keep the exported graphs computing the same outputs on engines other than ONNX Runtime.

Each one replaces a construct some engine gets wrong by one every engine reads the same way:

- `Transpose(W)` of an initializer becomes a pre-transposed initializer (OpenVINO drops that Transpose in
  `MatMul(z, Transpose(W))` when the same square W also feeds `MatMul(x, W)`: wrong logits at f32).
- `Where(C, a, 0)` with a constant boolean C becomes `Mul(a, float(C))` (OpenCV 4 cannot load a BOOL
  initializer); equal for finite a, and a gradient always is.
- `Gather(x, k)` with a scalar index becomes a one-column Gemm (when x is a Gemm read only there: the other
  columns are work nothing uses) or `Slice` + `Squeeze`, so the gathered axis is gone on every engine
  (OpenCV 4 returns [N, 1] for the scalar Gather's [N]).
"""

from __future__ import annotations

import logging

import numpy as np

from .rewrite import replace_nodes

log = logging.getLogger(__name__)


def _readers(graph: "onnx.GraphProto") -> dict[str, list]:  # noqa: F821
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def fold_constant_transposes(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Replace every `Transpose` of an initializer by the transposed initializer. Bit-exact.

    Returns the number of Transpose nodes folded.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    keep = []
    count = 0
    for node in graph.node:
        if node.op_type != "Transpose" or node.input[0] not in inits or node.input[0] in graph_inputs:
            keep.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)
        folded = np.ascontiguousarray(np.transpose(w, perm))  # no perm: reverse the axes, as ONNX does
        name = node.output[0] if node.output[0] not in outputs else f"{node.output[0]}__folded"
        graph.initializer.append(numpy_helper.from_array(folded, name))
        if name != node.output[0]:  # a graph output must still be produced by a node
            keep.append(helper.make_node("Identity", [name], [node.output[0]], name=f"{node.name}__identity"))
        count += 1
    replace_nodes(model, keep)
    log.debug("folded %d constant Transpose nodes into initializers", count)
    return count


def _is_zero_fill(name: str, inits: dict, producer: dict) -> str | None:
    """'scalar' if `name` is a zero scalar initializer, the shape input if it is `Expand(zero scalar, shape)`."""
    from onnx import numpy_helper

    def zero(n: str) -> bool:
        return n in inits and not inits[n].dims and float(numpy_helper.to_array(inits[n])) == 0.0

    if zero(name):
        return "scalar"
    node = producer.get(name)
    if node is not None and node.op_type == "Expand" and zero(node.input[0]):
        return node.input[1]
    return None


def where_constant_mask_as_mul(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Replace `Where(C, a, 0)` (C a BOOL initializer) by `Mul(a, C as a float initializer)`.

    The zero is a scalar initializer, or `Expand(zero, S)` when `a` is itself expanded to the same S (so the
    output keeps the Where's shape). Returns the number of Where nodes rewritten.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes = []
    count = 0
    for node in graph.node:
        fill = _is_zero_fill(node.input[2], inits, producer) if node.op_type == "Where" else None
        cond = inits.get(node.input[0]) if fill else None
        a = producer.get(node.input[1]) if fill else None
        shaped = fill == "scalar" or (a is not None and a.op_type == "Expand" and a.input[1] == fill)
        if cond is None or cond.data_type != TensorProto.BOOL or not shaped:
            new_nodes.append(node)
            continue
        zero_type = inits[node.input[2]] if fill == "scalar" else inits[producer[node.input[2]].input[0]]
        dtype = helper.tensor_dtype_to_np_dtype(zero_type.data_type)
        mask_name = f"{node.input[0]}__as_{np.dtype(dtype).name}"
        if mask_name not in inits:
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(cond).astype(dtype), mask_name))
            inits[mask_name] = graph.initializer[-1]
        new_nodes.append(helper.make_node("Mul", [node.input[1], mask_name], [node.output[0]], name=f"{node.name}__mul"))
        count += 1
    replace_nodes(model, new_nodes)
    log.debug("rewrote %d constant-mask Where nodes as Mul", count)
    return count


def _gemm_column(gemm: "onnx.NodeProto", k: int, inits: dict, readers: dict, outputs: set) -> list | None:  # noqa: F821
    """The Gemm computing only column k of `gemm`'s output ([N, 1]), or None where that does not apply."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    out = gemm.output[0]
    if (gemm.op_type != "Gemm" or len(readers.get(out, [])) != 1 or out in outputs or gemm.input[1] not in inits
            or (len(gemm.input) > 2 and gemm.input[2] and gemm.input[2] not in inits)):
        return None
    b = numpy_helper.to_array(inits[gemm.input[1]])
    if b.ndim != 2:
        return None
    b_col = b[k:k + 1, :] if attrs.get("transB", 0) else b[:, k:k + 1]
    if b_col.size == 0:
        return None
    new_inputs = [gemm.input[0], f"{gemm.input[1]}__col{k}"]
    extra = [numpy_helper.from_array(np.ascontiguousarray(b_col), new_inputs[1])]
    if len(gemm.input) > 2 and gemm.input[2]:
        c = numpy_helper.to_array(inits[gemm.input[2]])
        if c.ndim == 1 and c.size > 1:
            c = c[k:k + 1]
        elif c.ndim == 2 and c.shape[1] > 1:
            c = c[:, k:k + 1]
        new_inputs.append(f"{gemm.input[2]}__col{k}")
        extra.append(numpy_helper.from_array(np.ascontiguousarray(c), new_inputs[2]))
    node = helper.make_node("Gemm", new_inputs, [f"{out}__col{k}"], name=f"{gemm.name}__col{k}", **attrs)
    return [node, *extra]


def gather_scalar_as_slice(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Replace `Gather(x, k)` (k a scalar integer initializer) by a one-column Gemm + Squeeze when x is a
    2-D Gemm read only by this Gather (axis 1), else by `Slice(x, k, k+1)` + `Squeeze`. Same values, same shape.

    Returns the number of Gather nodes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    replaced: dict[str, list] = {}  # a Gemm's output -> the nodes that replace it
    new_nodes = []
    count = 0

    def const_i64(name: str, values: list[int]) -> str:
        if name not in inits:
            graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
            inits[name] = graph.initializer[-1]
        return name

    for node in graph.node:
        index = inits.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or index.dims or index.data_type not in (6, 7):  # INT32, INT64 scalars only
            new_nodes.append(node)
            continue
        k = int(numpy_helper.to_array(index))
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        base = node.name or node.output[0]
        axes = const_i64(f"{base}__axes", [axis])
        gemm = producer.get(node.input[0])
        column = _gemm_column(gemm, k, inits, readers, outputs) if gemm is not None and axis == 1 and k >= 0 else None
        if column is not None:
            gemm_node, *column_inits = column
            for init in column_inits:
                graph.initializer.append(init)
                inits[init.name] = graph.initializer[-1]
            replaced[gemm.output[0]] = [gemm_node]
            sliced = gemm_node.output[0]
        else:
            end = k + 1 if k != -1 else np.iinfo(np.int64).max
            sliced = f"{base}__slice"
            new_nodes.append(helper.make_node(
                "Slice", [node.input[0], const_i64(f"{base}__start", [k]), const_i64(f"{base}__end", [end]), axes],
                [sliced], name=f"{base}__slice"))
        new_nodes.append(helper.make_node("Squeeze", [sliced, axes], [node.output[0]], name=f"{base}__squeeze"))
        count += 1
    if replaced:  # the one-column Gemm takes the place of the full one (its inputs are ready there)
        new_nodes = [m for n in new_nodes for m in (replaced.get(n.output[0], [n]) if n.op_type == "Gemm" else [n])]
    replace_nodes(model, new_nodes)
    log.debug("rewrote %d scalar Gather nodes", count)
    return count

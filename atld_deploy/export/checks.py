"""Static guarantees on every exported graph: ONNX checker, shape inference, standard domain only, and
every op (with the restrictions that matter) in TensorRT's ONNX-parser support list (`trt_ops.json`)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ExportError

log = logging.getLogger(__name__)

TRT_OPS_FILE = Path(__file__).with_name("trt_ops.json")
STANDARD_DOMAINS = ("", "ai.onnx")


@functools.lru_cache(maxsize=1)
def trt_support() -> dict[str, Any]:
    """The TensorRT ONNX-parser support data (ops, opset range, restrictions)."""
    return json.loads(TRT_OPS_FILE.read_text())


def _constant_names(graph: "onnx.GraphProto") -> set[str]:  # noqa: F821
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _elem_types(model: "onnx.ModelProto") -> dict[str, int]:  # noqa: F821
    g = model.graph
    types: dict[str, int] = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for i in g.initializer:
        types[i.name] = i.data_type
    return types


def _ranks(model: "onnx.ModelProto") -> dict[str, int]:  # noqa: F821
    g = model.graph
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in list(g.input) + list(g.output) + list(g.value_info)
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    }


def check_graph(model: "onnx.ModelProto", what: str, support: dict[str, Any] | None = None) -> "onnx.ModelProto":  # noqa: F821
    """Run every static check on `model`; return the shape-inferred model.

    Args:
        model: the ONNX model (not modified).
        what: a name for messages (e.g. the file name).
        support: TensorRT support data; defaults to `trt_ops.json`.
    Raises:
        ExportError: naming the offending node and op (or the checker's message).
    """
    import onnx
    from onnx import TensorProto

    support = support or trt_support()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{what} fails the ONNX checker: {str(e).splitlines()[0]}") from e
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise ExportError(f"{what} fails ONNX shape inference: {str(e).splitlines()[0]}") from e

    if len(model.functions):
        raise ExportError(f"{what} contains local functions {[f.name for f in model.functions]}; TensorRT needs them inlined")
    opset = {o.domain: o.version for o in model.opset_import}
    lo, hi = support["opset"]["min"], support["opset"]["max"]
    version = opset.get("", opset.get("ai.onnx"))
    if version is None or not lo <= version <= hi:
        raise ExportError(f"{what} uses ONNX opset {version}; TensorRT 10 and 11 both accept {lo}-{hi}; export with --opset in that range")

    ops = set(support["ops"])
    consts = _constant_names(inferred.graph)
    types = _elem_types(inferred)
    ranks = _ranks(inferred)
    for node in inferred.graph.node:
        label = f"node {node.name!r} (op {node.op_type}"
        if node.domain not in STANDARD_DOMAINS:
            raise ExportError(f"{what}: {label}, domain {node.domain!r}) is a custom-domain op; TensorRT cannot parse it")
        if node.op_type not in ops:
            raise ExportError(f"{what}: {label}) is not in TensorRT's ONNX-parser support list ({TRT_OPS_FILE.name})")
        rule = support["constant_inputs"].get(node.op_type)
        if rule:
            for idx in rule["inputs"]:
                if idx < len(node.input) and node.input[idx] and node.input[idx] not in consts:
                    raise ExportError(f"{what}: {label}) input {idx} {node.input[idx]!r} is computed at run time; TensorRT: {rule['why']}")
        rule = support["input_types"].get(node.op_type)
        if rule:
            allowed = {getattr(TensorProto, t) for t in rule["types"]}
            for name in node.input:
                if types.get(name) not in allowed:
                    got = TensorProto.DataType.Name(types[name]) if name in types else "unknown"
                    raise ExportError(f"{what}: {label}) input {name!r} has type {got}; TensorRT: {rule['why']}")
        rule = support["spatial_rank"].get(node.op_type)
        if rule and node.input[0] in ranks and ranks[node.input[0]] not in rule["ranks"]:
            raise ExportError(f"{what}: {label}) has a rank-{ranks[node.input[0]]} input; TensorRT: {rule['why']}")
    log.debug("%s passed the static checks (%d nodes, opset %s)", what, len(model.graph.node), version)
    return inferred

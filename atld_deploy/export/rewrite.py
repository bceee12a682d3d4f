"""Graph-level rewrites that keep the function and make the exported IMT pipeline fast on every runtime.

Every rewrite produces only ops in TensorRT's parser list (Conv, Concat, DepthToSpace, Greater, Cast,
Clip, Mul, Add, Squeeze) and keeps every output's shape.

The input-gradient pass is a chain of transposed convolutions, which ONNX Runtime's CPU provider runs
about 2x slower than plain convolutions of the same size. A transposed convolution whose output is exactly
`stride` times its input is a plain convolution (flipped, transposed weights) followed, for stride > 1, by
DepthToSpace: output pixel `stride*m + r` only receives kernel taps `k` with `k = r + pad (mod stride)`, so
each of the stride^2 phases is a small convolution over its own taps; concatenated on the channel axis,
DepthToSpace interleaves them. The rewrites in `layout.py` then keep this pass in ONNX Runtime's blocked layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

REWRITES = (
    "ConvTranspose->Conv(+DepthToSpace)", "ReLU-backward Where->Mul(mask)", "channel-scale Mul folded into Conv weights",
    "constant Transpose folded into its initializer", "constant-mask Where->Mul", "scalar Gather->sliced Gemm/Slice+Squeeze",
    "shared channel scale moved after the residual Add", "ReLU-backward mask->depthwise Conv+Clip",
    "strided 1x1 shortcut folded into its stage's first phase",
)


@dataclass(frozen=True)
class _Phases:
    """Per spatial axis: for each phase r, the (tap k, input offset t) pairs, and the offset range."""

    taps: list[list[tuple[int, int]]]
    tmin: int
    tmax: int


def _phases(kernel: int, stride: int, pad: int) -> _Phases:
    taps: list[list[tuple[int, int]]] = []
    for r in range(stride):
        taps.append([(k, (r + pad - k) // stride) for k in range(kernel) if (r + pad - k) % stride == 0])
    offsets = [t for phase in taps for _, t in phase]
    return _Phases(taps, min(offsets), max(offsets))


def conv_transpose_as_conv(
    weight: np.ndarray, strides: list[int], pads: list[int], output_padding: list[int], in_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[int]] | None:
    """Equivalent Conv weight and pads for a 2-D ConvTranspose (group 1, dilation 1), or None if not applicable.

    Applicable when the output is exactly `stride` times the input on each axis, i.e.
    `kernel - 1 - pad_begin - pad_end + output_padding == 0` ... per axis after the stride scaling:
    `(H-1)*s - pb - pe + k + op == s*H`. The result runs as Conv(stride 1) then DepthToSpace(s, "DCR").

    Args:
        weight: ConvTranspose weight [C_in, C_out, kh, kw].
        strides, pads ([hb, wb, he, we]), output_padding: the node's attributes.
        in_hw: unused; the condition does not depend on the input size.
    Returns:
        (conv_weight [s*s*C_out, C_in, KH, KW], conv_pads [hb, wb, he, we]) or None.
    """
    del in_hw
    c_in, c_out, kh, kw = weight.shape
    sh, sw = strides
    if sh != sw or pads[0] != pads[2] or pads[1] != pads[3]:
        return None
    axes = []
    for k, s, p, op in ((kh, sh, pads[0], output_padding[0]), (kw, sw, pads[1], output_padding[1])):
        if -s - 2 * p + k + op != 0:  # output size != s * input size
            return None
        ph = _phases(k, s, p)
        if ph.tmin > 0 or ph.tmax < 0:  # would need a negative pad (cropping)
            return None
        if any(not taps for taps in ph.taps):
            # kernel < stride (e.g. a 1x1 stride-2 shortcut): some phases are all zeros, and computing them
            # as convolution channels costs more than ONNX Runtime's ConvTranspose does.
            return None
        axes.append(ph)
    s = sh
    ah, aw = axes
    KH, KW = ah.tmax - ah.tmin + 1, aw.tmax - aw.tmin + 1
    w2 = np.zeros((s * s * c_out, c_in, KH, KW), dtype=weight.dtype)
    wt = weight.transpose(1, 0, 2, 3)  # [C_out, C_in, kh, kw]
    for ra in range(s):
        for rb in range(s):
            base = (ra * s + rb) * c_out  # DCR channel order: phase-major
            for ka, ta in ah.taps[ra]:
                for kb, tb in aw.taps[rb]:
                    w2[base:base + c_out, :, ta - ah.tmin, tb - aw.tmin] = wt[:, :, ka, kb]
    conv_pads = [-ah.tmin, -aw.tmin, ah.tmax, aw.tmax]
    return w2, conv_pads


def conv_transpose_phases(
    weight: np.ndarray, strides: list[int], pads: list[int], output_padding: list[int]
) -> list[tuple[np.ndarray, list[int]]] | None:
    """The stride^2 phase convolutions of a strided 2-D ConvTranspose, in DepthToSpace "DCR" order, or None.

    Same condition as `conv_transpose_as_conv`, and each phase must read only input offsets its own padding
    reaches (`tmin <= 0 <= tmax` per phase). Phase (ra, rb) is a Conv(stride 1) with a kernel over that
    phase's taps alone, so the phases do only the multiplications the transposed convolution does (9 taps
    for a 3x3 stride-2 kernel where the single dense phase convolution does 16); concatenated on the channel
    axis, then DepthToSpace, they are the transposed convolution's output.

    Returns [(weight [C_out, C_in, KH, KW], pads [hb, wb, he, we])] for ra, rb in row-major order.
    """
    if conv_transpose_as_conv(weight, strides, pads, output_padding) is None:
        return None
    _, _, kh, kw = weight.shape
    s = strides[0]
    ah, aw = _phases(kh, s, pads[0]), _phases(kw, s, pads[1])
    wt = weight.transpose(1, 0, 2, 3)  # [C_out, C_in, kh, kw]
    out: list[tuple[np.ndarray, list[int]]] = []
    for ra in range(s):
        for rb in range(s):
            ta = [t for _, t in ah.taps[ra]]
            tb = [t for _, t in aw.taps[rb]]
            if min(ta) > 0 or max(ta) < 0 or min(tb) > 0 or max(tb) < 0:
                return None
            w = np.zeros((wt.shape[0], wt.shape[1], max(ta) - min(ta) + 1, max(tb) - min(tb) + 1), dtype=weight.dtype)
            for ka, t_a in ah.taps[ra]:
                for kb, t_b in aw.taps[rb]:
                    w[:, :, t_a - min(ta), t_b - min(tb)] = wt[:, :, ka, kb]
            out.append((w, [-min(ta), -min(tb), max(ta), max(tb)]))
    return out


def rewrite_conv_transpose(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Replace every applicable ConvTranspose (weight an initializer, no bias or output_shape) in place.

    Returns the number of nodes rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ok = (
            node.op_type == "ConvTranspose" and len(node.input) == 2 and node.input[1] in inits
            and attrs.get("group", 1) == 1 and list(attrs.get("dilations", [1, 1])) == [1, 1]
            and "output_shape" not in attrs and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        )
        result = None
        if ok:
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.ndim == 4:
                result = conv_transpose_as_conv(
                    w, list(attrs.get("strides", [1, 1])), list(attrs.get("pads", [0, 0, 0, 0])),
                    list(attrs.get("output_padding", [0, 0])),
                )
        if result is None:
            new_nodes.append(node)
            continue
        w2, conv_pads = result
        s = int(attrs.get("strides", [1, 1])[0])
        phases = None
        if s > 1:
            phases = conv_transpose_phases(w, list(attrs.get("strides", [1, 1])), list(attrs.get("pads", [0, 0, 0, 0])),
                                           list(attrs.get("output_padding", [0, 0])))
        convs = phases if phases is not None else [(w2, conv_pads)]
        conv_outs = []
        for i, (wi, pi) in enumerate(convs):
            suffix = "" if len(convs) == 1 else f"_p{i}"
            w_name = f"{node.input[1]}__as_conv_{node.name}{suffix}"
            graph.initializer.append(numpy_helper.from_array(wi, w_name))
            conv_outs.append(node.output[0] if s == 1 else f"{node.output[0]}__phase{suffix}")
            new_nodes.append(helper.make_node(
                "Conv", [node.input[0], w_name], [conv_outs[-1]], name=f"{node.name}__conv{suffix}",
                kernel_shape=list(wi.shape[2:]), pads=pi, strides=[1, 1], dilations=[1, 1], group=1,
            ))
        if s > 1:
            d2s_in = conv_outs[0]
            if len(conv_outs) > 1:
                d2s_in = f"{node.output[0]}__phases"
                new_nodes.append(helper.make_node("Concat", conv_outs, [d2s_in], name=f"{node.name}__phases", axis=1))
            new_nodes.append(helper.make_node(
                "DepthToSpace", [d2s_in], [node.output[0]], name=f"{node.name}__d2s", blocksize=s, mode="DCR",
            ))
        count += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(model)
    log.debug("rewrote %d ConvTranspose nodes as Conv(+DepthToSpace)", count)
    return count


def _drop_unused_initializers(model: "onnx.ModelProto") -> None:  # noqa: F821
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def float_zeros(graph: "onnx.GraphProto") -> dict[str, int]:  # noqa: F821
    """The graph's scalar floating-point initializers equal to 0, with their ONNX element type."""
    from onnx import numpy_helper

    return {i.name: i.data_type for i in graph.initializer
            if not i.dims and numpy_helper.to_array(i).dtype.kind == "f" and float(numpy_helper.to_array(i)) == 0.0}


def rewrite_relu_masks(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Replace the ReLU-backward pattern `Where(LessOrEqual(r, 0), 0, g)` by `Mul(g, Cast(Greater(r, 0)))`.

    Equal for finite g (the gradient always is); ONNX Runtime's CPU Where with a broadcast scalar is ~5x
    slower than the Greater+Cast+Mul chain. Returns the number of nodes rewritten.
    """
    from onnx import helper

    graph = model.graph
    zeros = float_zeros(graph)
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes = []
    count = 0
    for node in graph.node:
        cond = producer.get(node.input[0]) if node.op_type == "Where" else None
        if (
            cond is None or cond.op_type != "LessOrEqual" or cond.input[1] not in zeros
            or node.input[1] not in zeros or zeros[node.input[1]] != zeros[cond.input[1]]
        ):
            new_nodes.append(node)
            continue
        r, zero, g = cond.input[0], cond.input[1], node.input[2]
        base = node.name or node.output[0]
        new_nodes += [
            helper.make_node("Greater", [r, zero], [f"{base}__pos"], name=f"{base}__gt"),
            helper.make_node("Cast", [f"{base}__pos"], [f"{base}__mask"], name=f"{base}__cast", to=zeros[zero]),
            helper.make_node("Mul", [g, f"{base}__mask"], [node.output[0]], name=f"{base}__mul"),
        ]
        count += 1
    replace_nodes(model, new_nodes)
    log.debug("rewrote %d ReLU-backward Where nodes as Mul by a mask", count)
    return count


def replace_nodes(model: "onnx.ModelProto", nodes: list) -> None:  # noqa: F821
    """Make `nodes` (in topological order) the graph's nodes, then drop what nobody reads any more."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    remove_dead_nodes(model)


def remove_dead_nodes(model: "onnx.ModelProto") -> None:  # noqa: F821
    """Drop nodes whose outputs nobody reads (e.g. a LessOrEqual left behind), then unused initializers."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    _drop_unused_initializers(model)


def fold_channel_scales(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Fold `Mul(t, s)` (s a [1, C, 1, 1] initializer: eval batch norm's backward) into the weights of the
    convolutions that read it, when convolutions are its only readers: Conv(t*s, W) = Conv(t, W*s).

    Returns the number of Mul nodes removed.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}

    def foldable(conv: "onnx.NodeProto", name: str) -> bool:  # noqa: F821
        group = next((helper.get_attribute_value(a) for a in conv.attribute if a.name == "group"), 1)
        return (conv.op_type in ("Conv", "ConvTranspose") and conv.input[0] == name and name not in conv.input[1:]
                and len(conv.input) > 1 and conv.input[1] in inits and group == 1)

    removed: set[str] = set()
    for node in graph.node:
        if node.op_type != "Mul" or node.output[0] in outputs:
            continue
        scale_name = next((i for i in node.input if i in inits), None)
        if scale_name is None or len(node.input) != 2:
            continue
        scale = numpy_helper.to_array(inits[scale_name])
        other = node.input[0] if node.input[1] == scale_name else node.input[1]
        convs = readers.get(node.output[0], [])
        if scale.ndim != 4 or scale.shape[0] != 1 or scale.shape[2:] != (1, 1) or not convs:
            continue
        if not all(foldable(c, node.output[0]) for c in convs):
            continue
        for conv in convs:
            w = numpy_helper.to_array(inits[conv.input[1]])
            c = scale.reshape(-1)
            if w.shape[1 if conv.op_type == "Conv" else 0] != c.size:
                break
        else:
            for conv in convs:
                w = numpy_helper.to_array(inits[conv.input[1]])
                c = scale.reshape(-1).astype(w.dtype)
                w2 = w * (c[None, :, None, None] if conv.op_type == "Conv" else c[:, None, None, None])
                new_name = f"{conv.input[1]}__scaled_{node.name or node.output[0]}"
                graph.initializer.append(numpy_helper.from_array(w2.astype(w.dtype), new_name))
                inits[new_name] = graph.initializer[-1]
                conv.input[0], conv.input[1] = other, new_name
            removed.add(node.output[0])
    remove_dead_nodes(model)
    log.debug("folded %d channel-scale Mul nodes into convolution weights", len(removed))
    return len(removed)


def distribute_channel_scales(model: "onnx.ModelProto") -> int:  # noqa: F821
    """Rewrite `Add(Mul(a, s), Mul(b, s))` as `Mul(Add(a, b), s)` (s one [1, C, 1, 1] initializer on both).

    In the backward half of a residual stage, eval batch norm's scale multiplies both branches of the
    gradient before they are summed; once it follows the sum, `fold_channel_scales` can fold it (and the
    branch Muls left with only convolution readers) into the next convolutions' weights. Returns the
    number of Add nodes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def scaled(name: str) -> tuple[str, str] | None:
        node = producer.get(name)
        if node is None or node.op_type != "Mul" or len(node.input) != 2:
            return None
        scale = next((i for i in node.input if i in inits), None)
        other = node.input[0] if node.input[1] == scale else node.input[1]
        if scale is None or other in inits or tuple(inits[scale].dims[:1]) + tuple(inits[scale].dims[2:]) != (1, 1, 1):
            return None
        return other, scale

    new_nodes = []
    count = 0
    for node in graph.node:
        terms = [scaled(i) for i in node.input] if node.op_type == "Add" and len(node.input) == 2 else [None]
        if None in terms or len(inits[terms[0][1]].dims) != 4 or not np.array_equal(
                numpy_helper.to_array(inits[terms[0][1]]), numpy_helper.to_array(inits[terms[1][1]])):
            new_nodes.append(node)
            continue
        base = node.name or node.output[0]
        new_nodes += [
            helper.make_node("Add", [terms[0][0], terms[1][0]], [f"{base}__unscaled"], name=f"{base}__sum"),
            helper.make_node("Mul", [f"{base}__unscaled", terms[0][1]], [node.output[0]], name=f"{base}__scale"),
        ]
        count += 1
    replace_nodes(model, new_nodes)
    log.debug("moved %d shared channel scales after their residual Add", count)
    return count


def optimize_graph(model: "onnx.ModelProto") -> list[str]:  # noqa: F821
    """Apply every rewrite (speed, then portability); return their names with counts (recorded in the manifest).

    The portability rewrites come from other engines: OpenVINO drops the Transpose of `MatMul(z, Transpose(W))`
    when the same constant W also feeds `MatMul(x, W)`, and OpenCV 4 refuses a BOOL initializer and keeps the
    gathered axis of a scalar Gather.
    """
    from .layout import fold_strided_shortcuts, relu_masks_as_convolutions
    from .portable import fold_constant_transposes, gather_scalar_as_slice, where_constant_mask_as_mul

    n_ct = rewrite_conv_transpose(model)
    n_mask = rewrite_relu_masks(model)
    n_dist = distribute_channel_scales(model)
    n_fold = fold_channel_scales(model)
    n_tr = fold_constant_transposes(model)
    n_where = where_constant_mask_as_mul(model)
    n_gather = gather_scalar_as_slice(model)
    n_conv_mask = relu_masks_as_convolutions(model)
    n_short = fold_strided_shortcuts(model)
    counts = (n_ct, n_mask, n_fold, n_tr, n_where, n_gather, n_dist, n_conv_mask, n_short)
    return [f"{name} x{n}" for name, n in zip(REWRITES, counts)]

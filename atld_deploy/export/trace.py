"""Trace the IMT pipeline (a forward that calls autograd) into one forward-only ATen graph, then to ONNX.

No exporter handles `torch.autograd.grad` inside a forward (docs/EXPORT.md). `make_fx` does: it
records the backward pass as ATen ops. With PyTorch's core decompositions every backward op becomes a
forward op except `convolution_backward`; its input-gradient is a transposed convolution with the same
weight, stride, padding, dilation and groups (weight and bias gradients are never needed here).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ExportError
from ..graphs import GraphKind
from ..imt import IMTConfig, IMTPipeline

log = logging.getLogger(__name__)
aten = torch.ops.aten


def _conv_input_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,  # noqa: A002 - ATen's argument name
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, None, None]:
    """`aten.convolution_backward` reduced to the input gradient: a transposed convolution."""
    if transposed:
        raise ExportError("the model contains a transposed convolution; its input gradient is not supported by the exporter")
    if not output_mask[0]:
        return None, None, None
    spatial = range(weight.dim() - 2)
    # output_padding makes the transposed convolution restore the input's spatial size exactly.
    out_pad = [
        int(input.shape[2 + i])
        - ((int(grad_output.shape[2 + i]) - 1) * stride[i] - 2 * padding[i] + dilation[i] * (int(weight.shape[2 + i]) - 1) + 1)
        for i in spatial
    ]
    grad_in = aten.convolution(grad_output, weight, None, list(stride), list(padding), list(dilation), True, out_pad, groups)
    return grad_in, None, None


def decomposition_table() -> dict[object, Callable[..., object]]:
    """PyTorch's core ATen decompositions plus the convolution input-gradient above.

    Eval-mode batch norm is kept as one op so it exports as BatchNormalization, which runtimes fuse into
    the preceding convolution.
    """
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _conv_input_grad
    return table


class Float16Classifier(nn.Module):
    """A float16 copy of a classifier behind float32 edges: float32 images in, float32 logits out.

    Autograd casts the logit gradient to float16 on its way in and the input gradient back to float32, so
    in the float16 pipeline only the classifier's convolutions (nearly all the cost) run in float16. On its
    own it is the float16 classifier graph (`classifier_fp16`), with the float classifier's contract.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(classifier).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.float16)).to(torch.float32)


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 frames -> NCHW float32 images in [0, 1]: what `images_uint8` graphs do first."""
    return frames.permute(0, 3, 1, 2).to(torch.float32) / 255.0


def images_to_frames(images: torch.Tensor) -> torch.Tensor:
    """NCHW float images in [0, 1] -> the nearest NHWC uint8 frames (the inverse of `frames_to_images`)."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class PipelineFunction(nn.Module):
    """The deployed function as one module: images -> (logits, p_natural[, images_imt]).

    `uint8_input=True` takes NHWC uint8 frames and converts them inside (permute, /255).
    `half=True` is the float16 pipeline: the classifier runs in float16 (`Float16Classifier`); the
    discriminator, the log-sigmoid, the sign step and the clamp stay in float32 (they cost almost nothing
    and are where float16 loses the most), and each example's logit gradient is rescaled to unit size before
    the float16 backward pass (`unit_logit_grad`), so it cannot underflow or overflow. Inputs and outputs
    are float32.
    """

    def __init__(
        self,
        classifier: nn.Module,
        discriminator: nn.Module,
        cfg: IMTConfig,
        emit_transformed: bool = False,
        uint8_input: bool = False,
        half: bool = False,
    ) -> None:
        super().__init__()
        self.pipeline = IMTPipeline(Float16Classifier(classifier) if half else classifier, discriminator, cfg)
        self.pipeline.unit_logit_grad = half
        self.emit_transformed = emit_transformed
        self.uint8_input = uint8_input

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = frames_to_images(images) if self.uint8_input else images
        logits, p, x_t = self.pipeline(x)
        return (logits, p) + ((x_t,) if self.emit_transformed else ())


class ClassifierFunction(nn.Module):
    """images -> logits (a plain forward; traced the same way for one code path)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)


class DiscriminatorFunction(nn.Module):
    """logits -> (natural_logit, class_logits)."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator.eval()

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(logits)


def graph_module(kind: GraphKind, classifier: nn.Module, discriminator: nn.Module | None, cfg: IMTConfig,
                 precision: str | None = None) -> nn.Module:
    """The module that computes graph kind `kind` (every traced output, the optional ones included), read
    from its catalogue entry: what it computes, its input, its precision (`precision` overrides it: the
    PyTorch backend and the parity reference compute a float16 kind in float32)."""
    half = (precision or kind.precision) == "fp16"
    if kind.computes == "classifier":
        return ClassifierFunction(Float16Classifier(classifier) if half else classifier)
    if discriminator is None:
        raise ExportError(f"graph {kind.key!r} needs a discriminator and the run has none")
    if kind.computes == "discriminator":
        return DiscriminatorFunction(discriminator)
    return PipelineFunction(classifier, discriminator, cfg, emit_transformed=bool(kind.optional),
                            uint8_input=kind.input.dtype == "uint8", half=half)


def example_input(kind: GraphKind, classes: int, channels: int, size: int, batch: int = 2) -> torch.Tensor:
    """A random input of graph kind `kind` to trace it with (its shape and sampling from the catalogue)."""
    spec = kind.input.spec(classes, channels, size)
    shape = [batch if isinstance(d, str) else d for d in spec.shape]
    if kind.input.sample == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8)
    return torch.randn(shape) if kind.input.sample == "normal" else torch.rand(shape)


def outputs_of(kind: GraphKind, module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run `graph_module(kind, ...)` on `x` and name its outputs (the catalogue's order)."""
    out = module(x)
    out = (out,) if isinstance(out, torch.Tensor) else out
    return dict(zip([t.name for t in kind.traced], out))


class _Traced(nn.Module):
    """Wraps a traced GraphModule so `torch.onnx.export` sees a module with named tensor outputs."""

    def __init__(self, gm: nn.Module, single: bool) -> None:
        super().__init__()
        self.gm = gm
        self.single = single

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.gm(x)
        return out if self.single else tuple(out)


def trace_to_aten(fn: nn.Module, example: torch.Tensor) -> nn.Module:
    """Trace `fn(example)` with symbolic shapes into a forward-only ATen GraphModule (autograd unrolled)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    fn.eval()
    try:
        gm = make_fx(fn, decomposition_table=decomposition_table(), tracing_mode="symbolic", _allow_non_fake_inputs=True)(example)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - make_fx raises many kinds on untraceable code
        raise ExportError(f"could not trace {type(fn).__name__} at the ATen level ({type(e).__name__}: {e})") from e
    leftovers = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "backward" in str(n.target)})
    if leftovers:
        raise ExportError(f"the traced graph still contains backward ops {leftovers}; add a decomposition for them")
    return gm


def export_onnx(
    fn: nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: list[str],
    path: Path,
    opset: int,
) -> None:
    """Trace `fn` (make_fx) and export it with a dynamic batch dimension to `path`."""
    gm = trace_to_aten(fn, example)
    module = _Traced(gm, single=len(output_names) == 1)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, (example,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=opset,
                input_names=[input_name], output_names=output_names, optimize=True, verbose=False,
                report=False, external_data=False,
            )
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
            raise ExportError(f"torch.onnx.export failed for {input_name} -> {output_names} ({type(e).__name__}: {e})") from e
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))

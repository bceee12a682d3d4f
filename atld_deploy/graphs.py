"""The graph catalogue: every kind of graph an artifact can hold, in one table every stage reads.

A kind names its key (the manifest's `graphs` key and the ONNX file's stem), its one input, its outputs, the
precision it computes in, the function it computes (`classifier`, `discriminator` or the IMT `pipeline`),
the export option that produces it and the TensorRT engine it is built into. The exporter traces and
describes each kind from here (the torch side, `export.trace.graph_module`, builds the module from these
fields), parity feeds and judges it from here, and the runtime (the PyTorch backend and the backend
selector) accepts exactly these kinds. Adding a kind is one entry in `GRAPHS`.

Torch-free, so the runtime imports it without loading the export stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .artifact import BATCH, TensorSpec
from .errors import ArtifactError

__all__ = ["GRAPHS", "GRAPH_KEYS", "GraphKind", "Tensor", "kind_of"]

Computes = Literal["classifier", "discriminator", "pipeline"]
# The symbols a shape template may use; `specs` fills them from the run.
CHANNELS, SIZE, CLASSES = "C", "S", "K"


@dataclass(frozen=True)
class Tensor:
    """One graph input or output, its shape written with BATCH, C (channels), S (side) and K (classes).

    `sample`: how an example of it is drawn for tracing: "unit" (uniform in [0, 1]), "uint8" (0..255) or
    "normal" (standard normal)."""

    name: str
    dtype: str
    shape: tuple[str, ...]
    meaning: str
    sample: str = "unit"

    def spec(self, classes: int, channels: int, size: int) -> TensorSpec:
        """The manifest's `TensorSpec` of this tensor for a run of that shape."""
        dims = {CHANNELS: channels, SIZE: size, CLASSES: classes}
        return TensorSpec(self.name, self.dtype, [BATCH if d == BATCH else dims[d] for d in self.shape], self.meaning)


IMAGES = Tensor("images", "float32", (BATCH, CHANNELS, SIZE, SIZE),
                "images, NCHW, RGB/gray in [0,1]; normalisation is inside the graph")
IMAGES_UINT8 = Tensor("images_uint8", "uint8", (BATCH, SIZE, SIZE, CHANNELS),
                      "decoded frames, NHWC uint8 0..255 (divided by 255 inside)", sample="uint8")
CLASSIFIER_LOGITS = Tensor("logits", "float32", (BATCH, CLASSES), "classifier logits", sample="normal")
LOGITS = Tensor("logits", "float32", (BATCH, CLASSES), "class logits (argmax = label)")
DISCRIMINATOR_OUTPUTS = (
    Tensor("natural_logit", "float32", (BATCH,), "sigmoid(natural_logit) = probability the input is natural (clean)"),
    Tensor("class_logits", "float32", (BATCH, CLASSES), "the discriminator's auxiliary class logits"),
)
PIPELINE_OUTPUTS = (
    Tensor("logits", "float32", (BATCH, CLASSES), "class logits of the IMT-transformed input (argmax = label)"),
    Tensor("p_natural", "float32", (BATCH,), "probability that the input as it arrived is natural (low = likely adversarial)"),
)
IMAGES_IMT = Tensor("images_imt", "float32", (BATCH, CHANNELS, SIZE, SIZE), "the IMT-transformed images, NCHW in [0,1]")


@dataclass(frozen=True)
class GraphKind:
    """One kind of graph. `optional` outputs are always computed (parity reads them) but kept as graph
    outputs only when export is asked to (`--emit-transformed`). `option`: the `ExportOptions` switch that
    produces the kind (None: always exported). `engine`: the key of the TensorRT engine built from it
    (None: none is)."""

    key: str
    input: Tensor
    outputs: tuple[Tensor, ...]
    precision: Literal["fp32", "fp16"]
    computes: Computes
    optional: tuple[Tensor, ...] = ()
    option: str | None = None
    engine: str | None = None

    @property
    def is_pipeline(self) -> bool:
        return self.computes == "pipeline"

    @property
    def needs_discriminator(self) -> bool:
        return self.computes != "classifier"

    @property
    def traced(self) -> tuple[Tensor, ...]:
        """Every output the traced graph computes, the optional ones included."""
        return self.outputs + self.optional

    def specs(self, classes: int, channels: int, size: int,
              keep_optional: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The manifest's (inputs, outputs) of this kind for a run of that shape."""
        outs = self.traced if keep_optional else self.outputs
        return [self.input.spec(classes, channels, size)], [t.spec(classes, channels, size) for t in outs]

    def optional_spec(self, name: str, classes: int, channels: int, size: int) -> TensorSpec:
        """The spec of optional output `name` (parity exposes it when the graph keeps it internal)."""
        return next(t for t in self.optional if t.name == name).spec(classes, channels, size)


GRAPHS: dict[str, GraphKind] = {k.key: k for k in (
    GraphKind("classifier", IMAGES, (LOGITS,), "fp32", "classifier", engine="classifier"),
    GraphKind("discriminator", CLASSIFIER_LOGITS, DISCRIMINATOR_OUTPUTS, "fp32", "discriminator"),
    GraphKind("pipeline", IMAGES, PIPELINE_OUTPUTS, "fp32", "pipeline", (IMAGES_IMT,), engine="pipeline"),
    GraphKind("pipeline_uint8", IMAGES_UINT8, PIPELINE_OUTPUTS, "fp32", "pipeline", (IMAGES_IMT,), option="uint8_input"),
    # the float16 pipeline keeps the float pipeline's contract, so its engine serves as `pipeline`
    GraphKind("pipeline_fp16", IMAGES, PIPELINE_OUTPUTS, "fp16", "pipeline", (IMAGES_IMT,), option="fp16", engine="pipeline"),
    # likewise the float16 classifier keeps the float classifier's contract, so its engine serves as `classifier`
    GraphKind("classifier_fp16", IMAGES, (LOGITS,), "fp16", "classifier", option="fp16", engine="classifier"),
)}
GRAPH_KEYS = tuple(GRAPHS)


def kind_of(key: str) -> GraphKind:
    """The catalogue entry of graph `key`.

    Raises:
        ArtifactError: `key` is not a graph kind this atld-deploy knows.
    """
    if key not in GRAPHS:
        raise ArtifactError(f"graph {key!r} is not a kind this atld-deploy knows (it knows {', '.join(GRAPH_KEYS)}); "
                            f"re-export the artifact with this version")
    return GRAPHS[key]

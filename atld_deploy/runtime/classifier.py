"""`Classifier`: the Python embedding API over an exported artifact.

    from atld_deploy.runtime import Classifier
    with Classifier.load("artifacts/", backend="auto") as clf:
        pred = clf.predict(images)          # uint8 NHWC / HWC or float NCHW / CHW in [0,1], numpy or torch
        pred.labels, pred.classes, pred.confidence, pred.p_natural, pred.logits
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError
from ..artifact import Manifest
from ..signing import open_artifact
from .inputs import as_batch
from .runner import Array, Runner
from .select import PassedOver, open_runner

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256  # largest batch handed to a backend without an engine limit (bounds activation memory)


@dataclass
class Prediction:
    """Per-image results. Arrays are numpy for numpy input and torch tensors (on the input's device) for torch
    input; `p_natural` is None when IMT is off (the classifier graph alone has no discriminator).

    Attributes:
        labels: int64 [N] predicted class indices.
        classes: the class names of `labels`.
        confidence: float32 [N] softmax probability of the predicted class.
        p_natural: float32 [N] discriminator's probability that the input image is natural (not adversarial).
        logits: float32 [N, K] logits (of the IMT-transformed image when IMT is on).
    """

    labels: Array
    classes: list[str]
    confidence: Array
    p_natural: Array | None
    logits: Array

    def __len__(self) -> int:
        return len(self.classes)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per image: label, class, confidence, p_natural (JSON-ready floats and ints)."""
        labels, conf = to_host(self.labels), to_host(self.confidence)
        p = to_host(self.p_natural) if self.p_natural is not None else None
        return [
            {
                "label": int(labels[i]),
                "class": self.classes[i],
                "confidence": float(conf[i]),
                "p_natural": None if p is None else float(p[i]),
            }
            for i in range(len(self.classes))
        ]


def to_host(a: Array) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


def _to_like(a: Array, like_torch: bool, device: Any) -> Array:
    """Move a runner output to the caller's world: numpy, or a torch tensor on the caller's device."""
    if like_torch:
        import torch

        t = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
        return t.to(device)
    return to_host(a)


def _concat(parts: list[Array]) -> Array:
    if isinstance(parts[0], np.ndarray):
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(parts)


def softmax_max(logits: Array) -> tuple[Array, Array]:
    """(argmax, max softmax probability) per row, numerically stable, in the array's own library."""
    if isinstance(logits, np.ndarray):
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return logits.argmax(axis=1).astype(np.int64), (1.0 / e.sum(axis=1)).astype(np.float32)
    import torch

    probs = torch.softmax(logits.float(), dim=1)
    conf, labels = probs.max(dim=1)
    return labels, conf


class Classifier:
    """An exported ATLD classifier (with its IMT step) served by one backend. Build it with `Classifier.load`."""

    def __init__(self, art: Path, manifest: Manifest, graph: str, runner: Runner, passed_over: list[PassedOver],
                 batch_size: int | None = None) -> None:
        self.art = art
        self.manifest = manifest
        self.graph = graph
        self.runner = runner
        self.passed_over = passed_over
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        art: str | Path,
        backend: str = "auto",
        device: str = "auto",
        imt: bool = True,
        batch_size: int | None = None,
        allow_unverified: bool = False,
        public_key: str | Path | None = None,
    ) -> "Classifier":
        """Open an artifact directory written by `atld-deploy export`.

        Args:
            art: the artifact directory (manifest.json, *.onnx, optional *.engine, run/).
            backend: `auto` (TensorRT -> ONNX Runtime CUDA -> ONNX Runtime CPU -> PyTorch), `tensorrt`,
                `onnxruntime` or `torch`.
            device: `auto`, `cpu` or `cuda`.
            imt: run the IMT pipeline graph (default); False runs the classifier graph alone (no p_natural).
            batch_size: largest batch sent to the backend at once (default: the engine's max batch, else 256).
            allow_unverified: serve an artifact whose manifest does not record a passed parity verification.
            public_key: require a valid signature by this key (default: $ATLD_DEPLOY_TRUST_KEY, if set).

        Raises:
            ArtifactError: the artifact is missing, malformed, incomplete, a file does not match its recorded
                hash, it is unverified (without `allow_unverified`) or its signature does not verify.
            EngineError: the requested backend cannot run here (the message says why).
            ConfigError: an unknown backend/device name or a batch size below 1.
        """
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        art = Path(art)
        manifest = open_artifact(art, allow_unverified=allow_unverified, public_key=public_key)
        graph = "pipeline" if imt else "classifier"
        runner, passed = open_runner(art, manifest, graph, backend=backend, device=device)
        return cls(art, manifest, graph, runner, passed, batch_size)

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def channels(self) -> int:
        return int(self.manifest.input["channels"])

    @property
    def size(self) -> int:
        return int(self.manifest.input["size"])

    @property
    def chunk(self) -> int:
        """The largest batch handed to the backend: `batch_size`, capped by the runner's max batch."""
        limit = self.runner.max_batch if self.runner.max_batch is not None else DEFAULT_CHUNK
        return min(limit, self.batch_size) if self.batch_size else limit

    @property
    def imt(self) -> bool:
        return self.graph != "classifier"

    # ------------------------------------------------------------------ inference
    def predict(self, images: Any) -> Prediction:
        """Classify images (see `atld_deploy.runtime.inputs` for the accepted forms).

        Inputs larger than the backend's batch limit are split; results come back in input order. A single
        image (HWC / CHW) gives a Prediction of length 1.

        Raises:
            DataError: wrong type, dtype, shape, channel count or value range (the message says what is expected).
        """
        batch = as_batch(images, self.channels, self.size)
        device = images.device if batch.is_torch else None
        raw = self.run_float_batch(batch.images)
        labels, conf = softmax_max(raw["logits"])
        names = [self.manifest.classes[int(i)] for i in to_host(labels)]
        out = {"labels": labels, "confidence": conf, "logits": raw["logits"], "p_natural": raw.get("p_natural")}
        conv = {k: (None if v is None else _to_like(v, batch.is_torch, device)) for k, v in out.items()}
        return Prediction(conv["labels"], names, conv["confidence"], conv["p_natural"], conv["logits"])

    def run_float_batch(self, x: Array) -> dict[str, Array]:
        """Run the graph on float32 NCHW [0,1] images already validated, in chunks of at most `self.chunk`.

        Returns `logits` and (with IMT) `p_natural`, as numpy on cpu runners and torch tensors on cuda ones.
        """
        wanted = [n for n in ("logits", "p_natural") if n in {t.name for t in self.runner.outputs}]
        if len(x) == 0:
            k = len(self.manifest.classes)
            empty = {"logits": np.zeros((0, k), np.float32), "p_natural": np.zeros((0,), np.float32)}
            return {n: empty[n] for n in wanted}
        name = self.runner.inputs[0].name
        parts: dict[str, list[Array]] = {n: [] for n in wanted}
        for chunk in self._chunks(x):
            n_real = len(chunk)
            if n_real < self.runner.min_batch:  # an engine profile starting above 1: pad with copies, drop after
                chunk = _concat([chunk] + [chunk[-1:]] * (self.runner.min_batch - n_real))
            out = self.runner.infer({name: chunk})
            for n in wanted:
                parts[n].append(out[n][:n_real])
        return {n: _concat(v) for n, v in parts.items()}

    def _chunks(self, x: Array) -> Iterator[Array]:
        for i in range(0, len(x), self.chunk):
            yield x[i : i + self.chunk]

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the backend's session/engine."""
        self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Classifier({str(self.art)!r}, backend={self.runner.describe()}, graph={self.graph!r})"

"""`Classifier`: the Python embedding API over an exported artifact.

    from atld_deploy.runtime import Classifier
    with Classifier.load("artifacts/", backend="auto") as clf:
        pred = clf.predict(images)          # uint8 NHWC / HWC or float NCHW / CHW in [0,1], numpy or torch
        pred.labels, pred.classes, pred.confidence, pred.p_natural, pred.suspect, pred.logits

The contract, in every IMT mode (static included): `p_natural` is the discriminator's probability that the
input *as it arrived* is natural (static mode runs the small discriminator graph on the classifier's logits);
`suspect` is `p_natural < threshold` when the artifact's card measured a threshold (else None); `confidence` is
the softmax of the logits divided by the served mode's calibration temperature (1.0 when the artifact has
none) -- applied here, once, for every backend; `logits` are the graph's raw logits.

The IMT mode (`imt=`) defaults to `auto`: the mode the artifact's robustness card supports (`atld_deploy.gate`),
or the pipeline as exported when there is no card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import AtldError, ConfigError
from ..artifact import Manifest
from ..gate import LABELS, PIPELINE_MODES, Decision, available_modes, decide, reexport_command
from ..signing import open_artifact
from .inputs import as_batch
from .runner import Array, Runner
from .select import PassedOver, open_runner

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256  # largest batch handed to a backend without an engine limit (bounds activation memory)


@dataclass
class Prediction:
    """Per-image results. Arrays are numpy for numpy input and torch tensors (on the input's device) for torch
    input. `p_natural` is None only for an artifact without a discriminator graph; `suspect` is None when the
    artifact has no measured detector threshold (`atld-deploy card`).

    Attributes:
        labels: int64 [N] predicted class indices.
        classes: the class names of `labels`.
        confidence: float32 [N] calibrated softmax probability of the predicted class (see the module docstring).
        p_natural: float32 [N] discriminator's probability that the input image is natural (not adversarial).
        logits: float32 [N, K] raw logits (of the IMT-transformed image when IMT is on).
        suspect: bool [N] `p_natural` below the artifact's detector threshold.
    """

    labels: Array
    classes: list[str]
    confidence: Array
    p_natural: Array | None
    logits: Array
    suspect: Array | None = None

    def __len__(self) -> int:
        return len(self.classes)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per image: label, class, confidence, p_natural, and suspect when the artifact has a
        threshold (JSON-ready floats, ints and bools)."""
        labels, conf = to_host(self.labels), to_host(self.confidence)
        p = to_host(self.p_natural) if self.p_natural is not None else None
        sus = to_host(self.suspect) if self.suspect is not None else None
        out = []
        for i in range(len(self.classes)):
            rec: dict[str, Any] = {"label": int(labels[i]), "class": self.classes[i], "confidence": float(conf[i]),
                                   "p_natural": None if p is None else float(p[i])}
            if sus is not None:
                rec["suspect"] = bool(sus[i])
            out.append(rec)
        return out


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


def softmax_max(logits: Array, temperature: float = 1.0) -> tuple[Array, Array]:
    """(argmax, max softmax probability of `logits / temperature`) per row, numerically stable, in the array's
    own library. The argmax does not depend on the (positive) temperature."""
    if isinstance(logits, np.ndarray):
        z = (logits - logits.max(axis=1, keepdims=True)).astype(np.float64) / temperature
        e = np.exp(z)
        return logits.argmax(axis=1).astype(np.int64), (1.0 / e.sum(axis=1)).astype(np.float32)
    import torch

    probs = torch.softmax(logits.double() / temperature, dim=1)
    conf, labels = probs.max(dim=1)
    return labels, conf.float()


def sigmoid(a: Array) -> Array:
    """The logistic function, float32, in the array's own library (stable for large |a|)."""
    if isinstance(a, np.ndarray):
        z = a.astype(np.float64)
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
    import torch

    return torch.sigmoid(a.float())


def below(p: Array, threshold: float) -> Array:
    """`p < threshold` as a bool array in the array's own library."""
    return p < threshold


class Classifier:
    """An exported ATLD classifier (with its IMT step) served by one backend. Build it with `Classifier.load`."""

    def __init__(self, art: Path, manifest: Manifest, graph: str, runner: Runner, passed_over: list[PassedOver],
                 batch_size: int | None = None, mode: str | None = None, decision: Decision | None = None,
                 discriminator: Runner | None = None) -> None:
        self.art = art
        self.manifest = manifest
        self.graph = graph
        self.runner = runner
        self.passed_over = passed_over
        self.batch_size = batch_size
        self.mode = mode or ("static" if graph == "classifier" else exported_mode(manifest))
        self.decision = decision  # how `auto` chose the mode (None when the mode was given)
        self.discriminator = discriminator  # static mode: logits -> p_natural
        self.temperature = manifest.temperature(self.mode)
        self.threshold = manifest.suspect_threshold()

    @classmethod
    def load(
        cls,
        art: str | Path,
        backend: str = "auto",
        device: str = "auto",
        imt: bool | str = "auto",
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
            imt: `auto` (default: the mode the artifact's card supports, see `atld_deploy.gate`; the pipeline as
                exported without a card), `static` (the classifier graph, then the discriminator graph for
                p_natural), `imt` / `imt-plus` (the pipeline; must be the mode it was exported with). True is the
                pipeline as exported, False is `static`.
            batch_size: largest batch sent to the backend at once (default: the engine's max batch, else 256).
            allow_unverified: serve an artifact whose manifest does not record a passed parity verification.
            public_key: require a valid signature by this key (default: $ATLD_DEPLOY_TRUST_KEY, if set).

        Raises:
            ArtifactError: the artifact is missing, malformed, incomplete, a file does not match its recorded
                hash, it is unverified (without `allow_unverified`) or its signature does not verify.
            EngineError: the requested backend cannot run here (the message says why).
            ConfigError: an unknown backend/device name or IMT mode, a mode the artifact does not ship, or a
                batch size below 1.
        """
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        art = Path(art)
        manifest = open_artifact(art, allow_unverified=allow_unverified, public_key=public_key)
        graph, mode, decision = resolve_mode(art, manifest, imt)
        runner, passed = open_runner(art, manifest, graph, backend=backend, device=device)
        disc = None
        if graph == "classifier" and "discriminator" in manifest.graphs:
            try:
                disc = _open_discriminator(art, manifest, runner)
            except BaseException:
                runner.close()
                raise
        return cls(art, manifest, graph, runner, passed, batch_size, mode, decision, disc)

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
        labels, conf, suspect = self.scores(raw)
        names = [self.manifest.classes[int(i)] for i in to_host(labels)]
        out = {"labels": labels, "confidence": conf, "logits": raw["logits"], "p_natural": raw.get("p_natural"),
               "suspect": suspect}
        conv = {k: (None if v is None else _to_like(v, batch.is_torch, device)) for k, v in out.items()}
        return Prediction(conv["labels"], names, conv["confidence"], conv["p_natural"], conv["logits"], conv["suspect"])

    def scores(self, raw: dict[str, Array]) -> tuple[Array, Array, Array | None]:
        """(labels, calibrated confidence, suspect or None) from `run_float_batch`'s output: the one place the
        temperature and the threshold are applied, whatever the backend."""
        labels, conf = softmax_max(raw["logits"], self.temperature)
        p = raw.get("p_natural")
        suspect = below(p, self.threshold) if p is not None and self.threshold is not None else None
        return labels, conf, suspect

    def run_float_batch(self, x: Array) -> dict[str, Array]:
        """Run the graph on float32 NCHW [0,1] images already validated, in chunks of at most `self.chunk`.

        Returns raw `logits` and `p_natural` (static mode: the discriminator graph on the classifier's logits),
        as numpy on cpu runners and torch tensors on cuda ones.
        """
        wanted = [n for n in ("logits", "p_natural") if n in {t.name for t in self.runner.outputs}]
        if self.discriminator is not None:
            wanted.append("p_natural")
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
            if self.discriminator is not None:
                d_in = self.discriminator.inputs[0].name
                out["p_natural"] = sigmoid(self.discriminator.infer({d_in: out["logits"]})["natural_logit"])
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
        if self.discriminator is not None:
            self.discriminator.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Classifier({str(self.art)!r}, backend={self.runner.describe()}, graph={self.graph!r}, mode={self.mode!r})"

    def describe_mode(self) -> str:
        """One line: the IMT mode served and why (the gate's numbers when `auto` chose it)."""
        why = self.decision.reason if self.decision is not None else "as asked"
        return f"IMT mode {LABELS.get(self.mode, self.mode)}: {why}"


def exported_mode(manifest: Manifest) -> str:
    """The mode the artifact's pipeline graph serves: imt | imt-plus, or static for a pipeline without a step."""
    return PIPELINE_MODES.get(str(manifest.imt.get("mode", "")), "static")


def resolve_mode(art: Path, manifest: Manifest, imt: bool | str) -> tuple[str, str, Decision | None]:
    """(graph, mode, the gate's decision or None) for a requested IMT mode (see `Classifier.load`).

    Raises:
        ConfigError: an unknown mode, or imt / imt-plus when the pipeline was exported with another mode.
    """
    from ..commands.options import imt_mode  # the one parser of the spellings (typer only, light)

    exported = exported_mode(manifest)
    if isinstance(imt, bool):
        return ("pipeline", exported, None) if imt else ("classifier", "static", None)
    mode = imt_mode(str(imt), allow=("auto", "static", "imt", "imt-plus"))
    if mode == "auto":
        decision = decide(manifest.card or None, available_modes(str(manifest.imt.get("mode", "")), list(manifest.graphs)),
                          exported)
        if not manifest.card:  # no evidence to choose by: serve the pipeline as exported
            return "pipeline", exported, decision
        mode = decision.mode
        log.info("%s: auto serves %s: %s", art, LABELS[mode], decision.reason)
    else:
        decision = None
    if mode == "static":
        return "classifier", "static", decision
    if mode != exported:
        raise ConfigError(f"IMT mode {mode}: the pipeline of {art} was exported with IMT mode {exported}; re-export "
                          f"with `{reexport_command(mode)}`, or ask for --imt {exported} or static")
    return "pipeline", mode, decision


def _open_discriminator(art: Path, manifest: Manifest, main: Runner) -> Runner:
    """The discriminator graph on the classifier's backend and device, else the best one that can run it."""
    try:
        runner, _ = open_runner(art, manifest, "discriminator", backend=main.backend, device=main.device)
    except AtldError as e:
        log.info("runtime: the discriminator does not run on %s (%s); using the best backend that does",
                 main.describe(), e)
        runner, _ = open_runner(art, manifest, "discriminator", backend="auto", device=main.device)
    return runner

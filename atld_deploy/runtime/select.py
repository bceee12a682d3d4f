"""Backend selection: which runner serves a graph of an artifact, and why the better ones were passed over.

`auto` tries, in order: a TensorRT engine (CUDA) -> ONNX Runtime CUDA -> ONNX Runtime CPU -> PyTorch. Each
candidate has a probe that names the first reason it cannot serve (not installed, no GPU, no engine for that
graph, an engine whose sidecar does not match this machine, ...); a candidate that passes its probe but fails to
open is passed over with that reason too. Whenever a better candidate was passed over, the log says which
backend was fallen back to and every reason, at WARNING when one of them failed to open (a graph the backend
refused is a problem with the artifact, not with this machine), else at INFO. The manifest's hashes are checked
before any of this (`Manifest.load(check_hashes=True)`), so a tampered or stale artifact is refused, never
half-used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import AtldError, ConfigError, EngineError
from ..artifact import EngineEntry, Manifest
from ..graphs import GRAPHS
from .runner import Runner

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Candidate:
    """One way to serve a graph: a backend on a device, with a probe and a factory."""

    backend: str
    device: str
    probe: Callable[[Path, Manifest, str], str | None]  # None when usable, else the reason it is not
    make: Callable[[Path, Manifest, str], Runner]

    @property
    def label(self) -> str:
        return f"{self.backend} ({self.device})"


@dataclass(frozen=True)
class PassedOver:
    """A candidate that was not used, and why."""

    label: str
    reason: str
    failed: bool = False  # it passed its probe but failed to open


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def engine_for(manifest: Manifest, graph: str) -> tuple[str, EngineEntry] | None:
    """The manifest's TensorRT engine serving `graph`: the one keyed `graph` (the catalogue's `engine` key: the
    fp16 pipeline's engine is keyed `pipeline` too, same tensor contract), else the first built from that graph."""
    if graph in manifest.engines:
        return graph, manifest.engines[graph]
    for key, entry in manifest.engines.items():
        if entry.source_graph == graph:
            return key, entry
    return None


# ---------------------------------------------------------------------------------------------- probes
def _probe_tensorrt(art: Path, manifest: Manifest, graph: str) -> str | None:
    found = engine_for(manifest, graph)
    if found is None:
        return f"the artifact has no TensorRT engine for {graph!r} (build one with `atld-deploy export --trt`)"
    try:  # stale source graph, TensorRT or GPU missing, other TensorRT version or GPU architecture
        check_sidecar(art, manifest, found[0])
    except EngineError as e:
        return str(e)
    return None


def _probe_ort(device: str) -> Callable[[Path, Manifest, str], str | None]:
    def probe(art: Path, manifest: Manifest, graph: str) -> str | None:  # noqa: ARG001
        from .ort_runner import PROVIDERS, available_providers

        if graph not in manifest.graphs:
            return f"the artifact has no {graph!r} ONNX graph"
        providers = available_providers()
        if providers is None:
            return "onnxruntime is not installed"
        if PROVIDERS[device] not in providers:
            return f"ONNX Runtime has no {PROVIDERS[device]} (it has {', '.join(providers)})"
        if device == "cuda" and not cuda_available():
            return "no CUDA GPU visible to torch (IOBinding binds torch CUDA tensors)"
        return None

    return probe


def _probe_torch(device: str) -> Callable[[Path, Manifest, str], str | None]:
    def probe(art: Path, manifest: Manifest, graph: str) -> str | None:
        if graph not in GRAPHS or graph not in manifest.graphs:
            return f"no {graph!r} graph to take the tensor contract from"
        if not manifest.run_dir(art).is_dir():
            return f"the artifact has no run copy at {manifest.run_dir(art)}"
        if device == "cuda" and not cuda_available():
            return "no CUDA GPU visible to torch"
        return None

    return probe


# ---------------------------------------------------------------------------------------------- factories
def _make_tensorrt(art: Path, manifest: Manifest, graph: str) -> Runner:
    from .trt_runner import TensorRTRunner

    found = engine_for(manifest, graph)
    if found is None:
        raise EngineError(f"the artifact has no TensorRT engine for {graph!r}")
    key, entry = found
    g = manifest.graphs[entry.source_graph]
    return TensorRTRunner(
        manifest.engine_path(art, key), g.inputs, g.outputs, min_batch=entry.min_batch, max_batch=entry.max_batch
    )


def _make_ort(device: str) -> Callable[[Path, Manifest, str], Runner]:
    def make(art: Path, manifest: Manifest, graph: str) -> Runner:
        from .ort_runner import OnnxRuntimeRunner

        g = manifest.graphs[graph]
        return OnnxRuntimeRunner(manifest.graph_path(art, graph), g.inputs, g.outputs, device=device)

    return make


def _make_torch(device: str) -> Callable[[Path, Manifest, str], Runner]:
    def make(art: Path, manifest: Manifest, graph: str) -> Runner:
        from .torch_runner import TorchRunner

        g = manifest.graphs[graph]
        return TorchRunner(manifest.run_dir(art), graph, manifest.imt_config(), g.inputs, g.outputs, device=device)

    return make


# The preference order of `auto`: best first.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("tensorrt", "cuda", _probe_tensorrt, _make_tensorrt),
    Candidate("onnxruntime", "cuda", _probe_ort("cuda"), _make_ort("cuda")),
    Candidate("onnxruntime", "cpu", _probe_ort("cpu"), _make_ort("cpu")),
    Candidate("torch", "cuda", _probe_torch("cuda"), _make_torch("cuda")),
    Candidate("torch", "cpu", _probe_torch("cpu"), _make_torch("cpu")),
)


def check_sidecar(art: Path, manifest: Manifest, engine_key: str) -> None:
    """Raise EngineError unless engine `engine_key` was built from the artifact's current source graph, by this
    machine's TensorRT version, for this machine's GPU (the export stage owns the sidecar format)."""
    from ..export.trt import check_engine_sidecar

    entry = manifest.engines[engine_key]
    check_engine_sidecar(Path(art) / entry.sidecar, manifest.graph_path(art, entry.source_graph))


def open_runner(
    art: str | Path,
    manifest: Manifest,
    graph: str,
    backend: str = "auto",
    device: str = "auto",
) -> tuple[Runner, list[PassedOver]]:
    """Open the best runner for `graph` of the artifact at `art`.

    Args:
        art: the artifact directory (its manifest already loaded and hash-checked as `manifest`).
        graph: a key of `manifest.graphs` (`pipeline`, `classifier`, ...).
        backend: `auto`, `tensorrt`, `onnxruntime` or `torch`.
        device: `auto` (a GPU when one serves), `cpu` or `cuda`.

    Returns:
        The opened runner and the better candidates that were passed over, each with its reason.

    Raises:
        ConfigError: an unknown backend or device name.
        EngineError: no candidate can serve (the message lists every reason).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if graph not in manifest.graphs:
        raise EngineError(f"graph {graph!r} is not in {art} (it has: {', '.join(sorted(manifest.graphs))})")
    art = Path(art)
    passed: list[PassedOver] = []
    for cand in CANDIDATES:
        if backend != "auto" and cand.backend != backend:
            continue
        if device != "auto" and cand.device != device:
            passed.append(PassedOver(cand.label, f"device {device!r} was requested"))
            continue
        reason = cand.probe(art, manifest, graph)
        if reason is None:
            runner = cand.make(art, manifest, graph)
            try:
                runner.open()
            except AtldError as e:
                passed.append(PassedOver(cand.label, f"failed to open: {e}", failed=True))
                continue
            _log_choice(cand, runner, graph, backend, passed)
            return runner, passed
        passed.append(PassedOver(cand.label, reason))
    detail = "; ".join(f"{p.label}: {p.reason}" for p in passed) or "no candidate matched"
    raise EngineError(f"no {backend} backend can run {graph!r} of {art} on device {device!r} ({detail})")


def _log_choice(chosen: Candidate, runner: Runner, graph: str, backend: str, passed: list[PassedOver]) -> None:
    skipped = [p for p in passed if "was requested" not in p.reason]
    if not skipped:
        log.info("runtime: %s runs %r", runner.describe(), graph)
        return
    why = "; ".join(f"{p.label}: {p.reason}" for p in skipped)
    level = logging.WARNING if any(p.failed for p in skipped) else logging.INFO
    log.log(level, "runtime: backend %s fell back to %s for %r (%s); passed over %s", backend, chosen.label, graph,
            runner.describe(), why)

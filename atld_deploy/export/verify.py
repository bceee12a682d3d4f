"""`verify_artifacts`: re-check an artifact directory's graphs (and engines) against PyTorch.

Writes `ART/parity.json` atomically and sets the manifest's `verified` flag; never deletes anything.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError, EngineError, ExportError
from ..imt import IMTConfig
from ..io import write_json_atomic
from ..run import load_run
from .manifest import PARITY, Manifest
from .parity import GraphParity, ParityReport, check_graph_parity

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")
TRANSFORMED = "images_imt"


def parity_inputs(run: Any, n_real: int = 256, n_random: int = 64, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Real test images of the run's data set (first `n_real`) plus `n_random` uniform random images.

    If the data set cannot be loaded here (e.g. CIFAR not on this machine), only random images are used and
    the report says so.
    """
    c, s = run.shape.channels, run.shape.size
    parts: list[torch.Tensor] = []
    info: dict[str, Any] = {"dataset": run.config.dataset, "real": 0, "random": n_random, "seed": seed}
    if n_real > 0:
        try:
            from ..data import load_dataset

            bundle = load_dataset(run.config.dataset, run.config.data_dir, download=False, image_size=run.config.image_size)
            n = min(n_real, len(bundle.test))
            x, _ = bundle.test.batch(torch.arange(n))
            if tuple(x.shape[1:]) != (c, s, s):
                raise DataError(f"test images have shape {tuple(x.shape[1:])}, the run expects {(c, s, s)}")
            parts.append(x.float())
            info["real"] = n
        except DataError as e:
            log.warning("parity uses random images only: the run's data set is not available here (%s)", e)
            info["real_unavailable"] = str(e)
    g = torch.Generator().manual_seed(seed)
    parts.append(torch.rand(n_random, c, s, s, generator=g))
    return torch.cat(parts), info


def onnxruntime_runner(path: Path, expose: Sequence[str] = ()) -> Any:
    """A Polygraphy ONNX Runtime (CPU) runner; `expose` adds internal tensors as extra outputs."""
    import onnx
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    model = onnx.load(str(path))
    produced = {o for n in model.graph.node for o in n.output}
    present = {o.name for o in model.graph.output}
    for name in expose:
        if name in produced and name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return OnnxrtRunner(SessionFromOnnx(model.SerializeToString(), providers=["CPUExecutionProvider"]), name=f"onnxruntime:{path.name}")


def onnx_graph_parity(
    path: Path,
    key: str,
    precision: str,
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    x: torch.Tensor,
    ref_cache: dict[str, Any] | None = None,
) -> GraphParity:
    """Parity of one ONNX graph of kind `key` ("classifier", "discriminator", "pipeline*") on ONNX Runtime
    CPU against the PyTorch modules; a pipeline's internal `images_imt` is exposed for the step check."""
    runner = onnxruntime_runner(path, expose=[TRANSFORMED] if key.startswith("pipeline") else [])
    return check_graph_parity(key, "onnxruntime", precision, runner, classifier, discriminator, cfg, x, ref_cache=ref_cache)


def tensorrt_runner(engine_path: Path) -> Any:
    """A Polygraphy TensorRT runner for a serialized engine (needs tensorrt and a CUDA GPU)."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))), name=f"tensorrt:{engine_path.name}")


def verify_artifacts(
    art_dir: str | Path,
    backends: Sequence[str] = ("onnxruntime",),
    n_real: int = 256,
    n_random: int = 64,
    seed: int = 0,
    update_manifest: bool = True,
    record: bool = True,
) -> ParityReport:
    """Check every graph (and, for `tensorrt`, every engine) in `art_dir` against PyTorch.

    Args:
        art_dir: an artifact directory written by `export_run`.
        backends: any of "onnxruntime", "tensorrt" (or "all": every backend available here).
        record: write the report to `ART/parity.json` and (with `update_manifest`) the manifest's `verified`
            flag; that changes the artifact, so a signature it had is removed (sign it again). False: read-only.
    Returns:
        The `ParityReport` (`.passed`).
    Raises:
        ExportError: the manifest or a listed file is missing or modified.
        EngineError: `tensorrt` asked for explicitly but unavailable, or an engine's sidecar does not match.
    """
    from .trt import check_engine_sidecar, tensorrt_status

    art = Path(art_dir)
    manifest = Manifest.load(art)
    wanted = list(BACKENDS) if "all" in backends else list(backends)
    for b in wanted:
        if b not in BACKENDS:
            raise ConfigError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)} or all")
    if not manifest.run_dir(art).is_dir():
        raise ExportError(
            f"{art} has no run/ copy (the PyTorch reference parity compares against); re-export with "
            f"`atld-deploy export RUN --out {art}`, or copy RUN's config.json, classes.json and *.safetensors into "
            f"{manifest.run_dir(art)}"
        )
    run = load_run(manifest.run_dir(art))
    if run.discriminator is None:
        raise ExportError(f"{manifest.run_dir(art)} has no discriminator; the artifact is incomplete — re-export it")
    cfg = manifest.imt_config()
    x, info = parity_inputs(run, n_real, n_random, seed)
    t0 = time.perf_counter()
    entries: list[GraphParity] = []
    skipped: list[str] = []
    refs: dict[str, Any] = {}
    if "onnxruntime" in wanted:
        for key, entry in manifest.graphs.items():
            entries.append(onnx_graph_parity(art / entry.file, key, entry.precision, run.classifier, run.discriminator, cfg, x, refs))
    if "tensorrt" in wanted:
        missing = tensorrt_status()
        if missing:
            if "all" not in backends:
                raise EngineError(f"--backend tensorrt: {missing}")
            skipped.append(f"tensorrt: {missing}")
        elif not manifest.engines:
            skipped.append("tensorrt: the artifact has no engines (export with --trt)")
        else:
            for key, eng in manifest.engines.items():
                check_engine_sidecar(art / eng.sidecar, art / manifest.graphs[eng.source_graph].file)
                src = eng.source_graph
                graph_kind = "classifier" if src == "classifier" else src
                runner = tensorrt_runner(art / eng.file)
                sizes = sorted({eng.min_batch, min(eng.opt_batch, eng.max_batch), min(3, eng.max_batch)})
                # Engines are built from graphs without images_imt, so the step is not checked on them.
                entries.append(check_graph_parity(graph_kind, "tensorrt", eng.precision, runner, run.classifier, run.discriminator,
                                                  cfg, x, batch_sizes=sizes, ref_cache=refs, expect_step=False))
                entries[-1].graph = f"{key} (engine)"
    info["seconds"] = round(time.perf_counter() - t0, 2)
    report = ParityReport(entries=entries, inputs=info, skipped=skipped)
    if record:
        from ..signing import drop_signature

        drop_signature(art, "verify recorded a new parity.json")
        write_json_atomic(art / PARITY, report.to_dict())
        if update_manifest and manifest.verified != report.passed:
            manifest.with_verified(report.passed).save(art)
    return report

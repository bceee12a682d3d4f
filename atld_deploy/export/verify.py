"""`verify_artifacts`: re-check an artifact directory's graphs (and engines) against PyTorch.

Each graph and engine is run by the runner the backend selector (`runtime.select`) would open for `infer` --
ONNX Runtime on the CPU, ONNX Runtime on CUDA with IOBinding where a GPU serves, TensorRT -- so a pass
vouches for the code that serves the bytes. A graph that keeps `images_imt` internal is also run as a
verification variant that outputs it (written to a temporary directory, never into the artifact); its other
outputs must be the served graph's (bit for bit on the CPU), so the step judged is the served graph's.

With `record`, writes `ART/parity.json` atomically and sets the manifest's `verified` flag; never deletes anything.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError, EngineError, ExportError
from ..graphs import GraphKind, kind_of
from ..imt import IMTConfig
from ..io import write_json_atomic
from ..run import load_run
from ..runtime.runner import Runner
from ..runtime.select import CANDIDATES, Candidate
from .manifest import PARITY, Manifest
from .parity import GraphParity, ParityReport, check_graph_parity

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")


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


def expose_outputs(path: Path, names: Sequence[str], workdir: Path) -> Path:
    """A copy of the graph at `path`, written under `workdir` (never into the artifact), that also outputs
    the internal tensors `names`: the verification variant whose transformed images parity can judge."""
    import onnx

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    out = workdir / f"{path.stem}.exposed.onnx"
    onnx.save(model, str(out))
    return out


def step_variant(served: Runner, path: Path, kind: GraphKind, shape: tuple[int, int, int], workdir: Path) -> Runner | None:
    """The served ONNX runner's twin on `expose_outputs(path, ...)`: the same runner class on the same device,
    with the kind's optional outputs that the served graph keeps internal added; None when there are none.
    `shape`: (classes, channels, size) of the run."""
    present = {t.name for t in served.outputs}
    hidden = [t.name for t in kind.optional if t.name not in present]
    if not hidden:
        return None
    outputs = served.outputs + [kind.optional_spec(n, *shape) for n in hidden]
    return type(served)(expose_outputs(path, hidden, workdir), served.inputs, outputs, device=served.device)


def runner_parity(
    served: Runner,
    variant: Runner | None,
    kind: GraphKind,
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    x: torch.Tensor,
    refs: dict[Any, Any],
    **kw: Any,
) -> GraphParity:
    """Open `served` (and the step `variant`) and judge them with `check_graph_parity`; a runner that
    cannot open is a failed entry (the code that would serve the bytes cannot), not a crash."""
    try:
        with served, (variant if variant is not None else contextlib.nullcontext()):
            return check_graph_parity(kind, served, classifier, discriminator, cfg, x, ref_cache=refs,
                                      step_runner=variant, **kw)
    except (EngineError, DataError) as e:  # the runner refused to load or to run the graph
        failed = GraphParity(graph=kw.get("label") or kind.key, backend=f"{served.backend} ({served.device})",
                             precision=kw.get("precision") or kind.precision, samples=0,
                             runner=f"{type(served).__module__}.{type(served).__qualname__}")
        failed.failures.append(f"{served.describe()} could not run it: {e}")
        return failed


def onnx_graph_parity(
    path: Path,
    key: str,
    precision: str | None,
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    x: torch.Tensor,
    ref_cache: dict[Any, Any] | None = None,
    runner_class: type[Runner] | None = None,
    device: str = "cpu",
) -> GraphParity:
    """Parity of one ONNX graph file of kind `key` outside an artifact (e.g. a graph under test), served by
    the runtime's ONNX Runtime runner (`runner_class`, default `OnnxRuntimeRunner`) with the catalogue's
    tensor specs; the kind's optional outputs are judged whether the file keeps them or not. `precision`:
    what to judge it as (None: the kind's)."""
    import onnx

    from ..runtime.ort_runner import OnnxRuntimeRunner

    kind = kind_of(key)
    with torch.no_grad():
        classes = int(classifier(x[:1]).shape[-1])
    shape = (classes, int(x.shape[1]), int(x.shape[2]))
    keeps = {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}
    inputs, outputs = kind.specs(*shape, keep_optional=all(t.name in keeps for t in kind.optional))
    served = (runner_class or OnnxRuntimeRunner)(path, inputs, outputs, device=device)
    with tempfile.TemporaryDirectory(prefix="atld-parity-") as work:
        variant = step_variant(served, path, kind, shape, Path(work))
        return runner_parity(served, variant, kind, classifier, discriminator, cfg, x,
                             ref_cache if ref_cache is not None else {}, precision=precision)


def _candidates(backend: str) -> list[Candidate]:
    """The backend selector's candidates for `backend`, in its order: parity opens runners exactly as `infer` does."""
    return [c for c in CANDIDATES if c.backend == backend]


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
        backends: any of "onnxruntime" (CPU; CUDA too where it serves), "tensorrt" (or "all": every backend
            available here).
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
            f"`atld-deploy export RUN --output {art}`, or copy RUN's config.json, classes.json and *.safetensors into "
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
    refs: dict[Any, Any] = {}
    shape = (len(manifest.classes), int(manifest.input["channels"]), int(manifest.input["size"]))
    kinds = {key: kind_of(key) for key in manifest.graphs}
    with tempfile.TemporaryDirectory(prefix="atld-parity-") as work:
        if "onnxruntime" in wanted:
            for cand in _candidates("onnxruntime"):  # every ONNX Runtime path `infer` may take: CPU, CUDA
                reason = cand.probe(art, manifest, next(iter(manifest.graphs)))
                if reason is not None:
                    if cand.device == "cpu":
                        raise EngineError(f"--backend onnxruntime: {reason}")
                    skipped.append(f"{cand.label}: {reason}")
                    continue
                for key, kind in kinds.items():
                    served = cand.make(art, manifest, key)
                    variant = step_variant(served, manifest.graph_path(art, key), kind, shape, Path(work))
                    entries.append(runner_parity(served, variant, kind, run.classifier, run.discriminator, cfg, x, refs))
        if "tensorrt" in wanted:
            missing = tensorrt_status()
            if missing:
                if "all" not in backends:
                    raise EngineError(f"--backend tensorrt: {missing}")
                skipped.append(f"tensorrt: {missing}")
            elif not manifest.engines:
                skipped.append("tensorrt: the artifact has no engines (export with --trt)")
            else:
                (cand,) = _candidates("tensorrt")
                for key, eng in manifest.engines.items():
                    check_engine_sidecar(art / eng.sidecar, art / manifest.graphs[eng.source_graph].file)
                    sizes = sorted({eng.min_batch, min(eng.opt_batch, eng.max_batch), min(3, eng.max_batch)})
                    # Engines are built from graphs without images_imt, so the step is not checked on them.
                    entries.append(runner_parity(cand.make(art, manifest, key), None, kinds[eng.source_graph],
                                                 run.classifier, run.discriminator, cfg, x, refs, batch_sizes=sizes,
                                                 expect_step=False, precision=eng.precision, label=f"{key} (engine)"))
    info["seconds"] = round(time.perf_counter() - t0, 2)
    report = ParityReport(entries=entries, inputs=info, skipped=skipped)
    if record:
        from ..signing import drop_signature

        drop_signature(art, "verify recorded a new parity.json")
        write_json_atomic(art / PARITY, report.to_dict())
        if update_manifest and manifest.verified != report.passed:
            manifest.with_verified(report.passed).save(art)
    return report

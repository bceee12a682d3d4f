"""`export_run`: a run directory -> a verified artifact directory (see manifest.py for the contract).

OUT is checked first: it must be absent, empty, or an artifact directory of ours holding nothing else
(`atld_deploy.owned`); anything else is refused before any work. Everything is built in a temporary
directory beside OUT and swapped in at the end (old OUT renamed aside, new one renamed in, old one deleted
only then), so a failed or interrupted export leaves the previous OUT intact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .. import __version__
from ..errors import EngineError, ExportError, ParityError
from ..imageio import RESIZE_POLICY
from ..imt import IMTConfig
from ..io import sha256_file
from ..owned import Owned, Replacement
from ..run import CLASSES, CLASSIFIER, CONFIG, DISCRIMINATOR, Run, load_run
from .checks import check_graph
from ..graphs import GRAPHS, GraphKind
from .manifest import (
    FORMAT_VERSION, MANIFEST, RUN_DIR, EngineEntry, GraphEntry, Manifest, artifact_entries, input_spec,
    is_artifact_manifest,
)
from .rewrite import REWRITES, optimize_graph
from .trace import example_input, export_onnx, graph_module

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportOptions:
    """Everything `atld-deploy export` can be asked for, validated on construction."""

    imt_mode: str = "plus"
    eps: float | None = None
    opset: int = DEFAULT_OPSET
    uint8_input: bool = False
    emit_transformed: bool = False
    fp16: bool = False
    trt: bool = False
    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256
    workspace_mb: int = 4096
    skip_parity: bool = False
    parity_real: int = 256
    parity_random: int = 64
    rewrite: bool = True

    def __post_init__(self) -> None:
        from .checks import trt_support

        lo, hi = trt_support()["opset"]["min"], trt_support()["opset"]["max"]
        if not lo <= self.opset <= hi:
            raise ExportError(f"--opset {self.opset} is outside {lo}-{hi}, the range TensorRT 10 and 11 both parse")
        if self.precision not in ("fp32", "fp16"):
            raise ExportError(f"--precision must be fp32 or fp16, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ExportError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")


def _provenance(run: Run, cfg: IMTConfig, opset: int, rewrites: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    import onnx
    import onnxruntime

    producer = {
        "atld_deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "opset": opset,
        "rewrites": list(REWRITES) if rewrites else [],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    run_info = {"method": run.config.method, "arch": run.config.arch, "dataset": run.config.dataset, "eps": run.config.eps}
    return producer, run_info


def _finish_graph(kind: GraphKind, path: Path, emit_transformed: bool, meta: dict[str, str], rewrite: bool) -> None:
    """Rewrite, drop the optional outputs unless asked for, stamp metadata, run the static checks, save."""
    import onnx

    key = kind.key
    model = onnx.load(str(path))
    if rewrite:
        log.debug("%s: %s", key, ", ".join(optimize_graph(model)))
    if not emit_transformed:
        # optional outputs (images_imt) stay internal tensors (parity exposes them); consumers see the rest.
        hidden = {t.name for t in kind.optional}
        keep = [o for o in model.graph.output if o.name not in hidden]
        del model.graph.output[:]
        model.graph.output.extend(keep)
    model.producer_name, model.producer_version = "atld-deploy", __version__
    del model.metadata_props[:]
    for k, v in sorted(dict(meta, graph=key).items()):
        model.metadata_props.add(key=f"atld.{k}", value=v)
    check_graph(model, f"{key} ({path.name})")
    onnx.save(model, str(path))
    log.info("%s: %d nodes, %.1f MB", path.name, len(model.graph.node), path.stat().st_size / 1e6)


def _copy_run(run_dir: Path, dest: Path) -> dict[str, str]:
    """Copy the run's config, classes and weights to `dest`; returns their SHA-256s for the manifest."""
    dest.mkdir(parents=True)
    for name in (CONFIG, CLASSES, CLASSIFIER, DISCRIMINATOR):
        shutil.copy2(run_dir / name, dest / name)
    return {name: sha256_file(dest / name) for name in (CONFIG, CLASSES, CLASSIFIER, DISCRIMINATOR)}


ARTIFACT_DIR = Owned("artifact", MANIFEST, is_artifact_manifest, artifact_entries, ExportError, "--output")


def _is_artifact(path: Path) -> bool:
    """True if `path` holds artifacts of ours that may be replaced (False when absent, empty or foreign)."""
    try:
        return ARTIFACT_DIR.check_replaceable(path)
    except ExportError:
        return False


def _failed_name(out: Path) -> Path:
    """Where an export that failed parity goes when `out` already holds artifacts: beside it, never over it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return out.with_name(f"{out.name}.failed-parity-{stamp}-{uuid.uuid4().hex[:4]}")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp`: checked again (it may have changed during the export), old renamed aside,
    new renamed in, old deleted only then."""
    if not ARTIFACT_DIR.check_replaceable(out):
        os.replace(tmp, out)  # absent, or an empty directory (rename replaces it)
        return
    old = Replacement(out)
    old.begin()
    try:
        os.replace(tmp, out)
    except OSError:
        old.rollback()
        raise
    old.commit()


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    imt_mode: str = "plus",
    eps: float | None = None,
    trt: bool = False,
    options: ExportOptions | None = None,
    echo: Callable[[str], None] = log.info,
    _after_write: Callable[[Path], None] | None = None,
    **kw: Any,
) -> Manifest:
    """Export a trained ATLD run to `out_dir`: ONNX graphs, manifest, run copy, parity report, engines.

    Args:
        run_dir: a run directory (`atld-deploy train --output RUN`).
        out_dir: the artifact directory to create or replace (atomically).
        imt_mode, eps, trt: shortcuts for the same `ExportOptions` fields; `**kw` sets any other field.
        options: a full `ExportOptions` (overrides the shortcuts).
        echo: where the parity table goes (the CLI passes typer.echo).
    Returns:
        The saved `Manifest` (`verified` True when parity passed).
    Raises:
        CheckpointError: bad run directory. ExportError: tracing, static checks or writing failed (the
        previous `out_dir` is intact). ParityError: written, but parity failed (manifest `verified: false`):
        into `out_dir` when it held no artifacts, else beside it as `<out_dir>.failed-parity-<time>-<id>`, so the
        previous artifacts stay intact and nothing is deleted.
        EngineError: `trt` asked for on a machine without TensorRT/GPU (refused before any work; nothing written).
    """
    opts = options or ExportOptions(imt_mode=imt_mode, eps=eps, trt=trt, **kw)
    run_dir, out = Path(run_dir), Path(out_dir)
    ARTIFACT_DIR.check_replaceable(out)  # refuse a foreign OUT before any work
    if opts.trt:
        from .trt import tensorrt_status

        missing = tensorrt_status()
        if missing:
            raise EngineError(
                f"--trt: {missing}; nothing was written. Export without --trt here, then build the engines on a "
                f"machine with TensorRT and a CUDA GPU: `atld-deploy export {run_dir} --output {out} --trt`"
            )
    run = load_run(run_dir)
    if run.discriminator is None:
        raise ExportError(
            f"run {run_dir} was trained with method {run.config.method!r} and has no discriminator; the IMT pipeline "
            f"and p_natural need one: export a run trained with --method atld"
        )
    cfg = run.imt_config(opts.imt_mode, opts.eps)
    c, s, k = run.shape.channels, run.shape.size, run.shape.num_classes
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    t_start = time.perf_counter()
    try:
        manifest = _build(run, run_dir, tmp, cfg, opts)
        if _after_write is not None:  # test hook: simulate an interruption after the files are written
            _after_write(tmp)
        report = None
        if not opts.skip_parity:
            from .verify import verify_artifacts

            report = verify_artifacts(tmp, backends=["onnxruntime"], n_real=opts.parity_real, n_random=opts.parity_random)
            manifest = Manifest.load(tmp, check_hashes=False)
        failed = report is not None and not report.passed
        written = _failed_name(out) if failed and _is_artifact(out) else out
        _swap_in(tmp, written)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s -> %s in %.0f s", run_dir, written, time.perf_counter() - t_start)
    if report is not None:
        echo(report.table())
        if failed:
            kept = f"; {out} still holds the previous artifacts" if written != out else ""
            raise ParityError(f"parity failed: the new artifacts are in {written}, marked verified: false (details in "
                              f"{written / 'parity.json'}){kept}; nothing was deleted")
    if opts.trt:
        manifest = add_engines(out, opts, echo)
    return manifest


def exported_kinds(opts: ExportOptions) -> list[GraphKind]:
    """The catalogue's graph kinds an export with `opts` writes (a kind's `option` names the switch)."""
    switches = {None: True, "uint8_input": opts.uint8_input, "fp16": opts.fp16 or (opts.trt and opts.precision == "fp16")}
    return [kind for kind in GRAPHS.values() if switches[kind.option]]


def engine_sources(precision: str, graphs: Iterable[str]) -> dict[str, str]:
    """Engine key -> the graph an engine of `precision` is built from, among the artifact's `graphs`: the
    catalogue's kinds with an engine, in that precision (fp16: `pipeline_fp16` as `pipeline`, `classifier_fp16`
    as `classifier`)."""
    present = set(graphs)
    return {kind.engine: kind.key for kind in GRAPHS.values()
            if kind.engine is not None and kind.precision == precision and kind.key in present}


def _build(run: Run, run_dir: Path, tmp: Path, cfg: IMTConfig, opts: ExportOptions) -> Manifest:
    c, s, k = run.shape.channels, run.shape.size, run.shape.num_classes
    producer, run_info = _provenance(run, cfg, opts.opset, opts.rewrite)
    classes = list(run.classes)
    imt = cfg.to_dict()
    inp = input_spec(c, s, RESIZE_POLICY)
    meta = {
        "format_version": str(FORMAT_VERSION), "classes": json.dumps(classes), "input": json.dumps(inp), "imt": json.dumps(imt),
        "run": json.dumps(run_info), "producer": json.dumps(producer),
    }
    graphs: dict[str, GraphEntry] = {}
    for kind in exported_kinds(opts):
        t0 = time.perf_counter()
        path = tmp / f"{kind.key}.onnx"
        fn = graph_module(kind, run.classifier, run.discriminator, cfg)
        export_onnx(fn, example_input(kind, k, c, s), kind.input.name, [t.name for t in kind.traced], path, opts.opset)
        _finish_graph(kind, path, opts.emit_transformed, dict(meta, precision=kind.precision), opts.rewrite)
        ins, outs = kind.specs(k, c, s, keep_optional=opts.emit_transformed)
        graphs[kind.key] = GraphEntry(path.name, ins, outs, sha256_file(path), kind.precision)
        log.info("exported %s in %.0f s", kind.key, time.perf_counter() - t0)
    run_files = _copy_run(run_dir, tmp / RUN_DIR)
    manifest = Manifest(FORMAT_VERSION, classes, inp, imt, graphs, {}, False, producer, run_info, run_files)
    manifest.save(tmp)
    return manifest


def add_engines(art: Path, opts: ExportOptions, echo: Callable[[str], None] = log.info) -> Manifest:
    """Build TensorRT engines for the pipeline and classifier in `art` (from their graphs in `opts.precision`,
    `engine_sources`), then verify them on TensorRT.

    The engines are built beside the graphs under temporary names and listed in the manifest only once
    built and checked; a failure leaves the ONNX artifacts as they were.
    """
    from .trt import TIMING_CACHE, EngineBuild, build_engine
    from .verify import verify_artifacts

    manifest = Manifest.load(art)
    spec = EngineBuild(opts.precision, opts.min_batch, opts.opt_batch, opts.max_batch, opts.workspace_mb)
    engines = dict(manifest.engines)
    for key, src in engine_sources(opts.precision, manifest.graphs).items():
        eng_file, side_file = f"{key}.{opts.precision}.engine", f"{key}.{opts.precision}.engine.json"
        build_engine(art / manifest.graphs[src].file, art / eng_file, art / side_file, spec, art / TIMING_CACHE)
        engines[key] = EngineEntry(eng_file, src, opts.precision, side_file, sha256_file(art / eng_file),
                                   opts.min_batch, opts.opt_batch, opts.max_batch, sha256_file(art / side_file))
    manifest = Manifest(**{**manifest.__dict__, "engines": engines})
    from ..signing import drop_signature

    drop_signature(art, "TensorRT engines were added")
    manifest.save(art)
    report = verify_artifacts(art, backends=["onnxruntime", "tensorrt"], n_real=opts.parity_real, n_random=opts.parity_random)
    echo(report.table())
    if not report.passed:
        raise ParityError(f"TensorRT parity failed for {art} (details in {art / 'parity.json'}); artifacts kept, verified: false")
    return Manifest.load(art)

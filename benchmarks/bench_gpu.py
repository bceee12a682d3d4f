"""The GPU benchmark: one command (`make bench-gpu`) that, on a machine with a CUDA GPU, records everything
the deployment's GPU figures come from into docs/measurements/bench_gpu.json.

    .venv/bin/python benchmarks/bench_gpu.py [--run demo/run] [--out docs/measurements/bench_gpu.json] [--dry]

Items, in order:
  engines     export RUN twice with TensorRT engines, each keyed pipeline and classifier (fp32: from pipeline and
              classifier; fp16: from pipeline_fp16 and classifier_fp16)
  parity      verify both artifacts through the serving runners (ONNX Runtime CUDA, TensorRT), read-only
  throughput  images/s and p50/p95 latency at batch 1/8/64/256 through the serving runners: PyTorch eager
              IMT+ fp32, ONNX Runtime CUDA pipeline, TensorRT fp32 pipeline and classifier, TensorRT fp16
              pipeline and classifier (an artifact without an engine for one is recorded with the reason)
  train       the ATLD / FGSM-RS training-step ratio on the GPU, fp32 and with --amp --channels-last

Without CUDA (or with --dry / DRY=1) it runs dry: the first line says so and why, every item says what it
skipped, and what can run without a GPU still runs (the run is loaded, TensorRT's status is read, the
training-ratio harness runs one tiny step on the CPU), so the command is known to work before a GPU is
there. A dry run never replaces a measurement file written by a GPU run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

BATCHES = (1, 8, 64, 256)
ITEMS = ("engines", "parity", "throughput", "train")
# (label, artifact precision, backend, graphs): what the throughput item times, through `run_bench`
THROUGHPUT = (
    ("PyTorch eager IMT+ fp32", "fp32", "torch", ("pipeline",)),
    ("ONNX Runtime CUDA fp32", "fp32", "onnxruntime", ("pipeline",)),
    ("TensorRT fp32", "fp32", "tensorrt", ("pipeline", "classifier")),
    ("TensorRT fp16", "fp16", "tensorrt", ("pipeline", "classifier")),
)


def dry_reason(forced: bool) -> str | None:
    """Why this run is dry (None: a real GPU run)."""
    if forced:
        return "asked for (--dry / DRY=1)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


def item_engines(run: Path, work: Path, dry: bool) -> tuple[dict[str, Any], str | None]:
    """Export RUN with fp32 and fp16 TensorRT engines (pipeline and classifier each) into `work`; returns the
    artifact paths and, under `planned`, the graph each engine is built from (dry runs record it too)."""
    from atld_deploy.export.exporter import ExportOptions, engine_sources, export_run, exported_kinds
    from atld_deploy.export.trt import tensorrt_status
    from atld_deploy.run import load_run

    planned = {p: engine_sources(p, [k.key for k in exported_kinds(ExportOptions(trt=True, precision=p))])
               for p in ("fp32", "fp16")}
    if not run.is_dir():
        if dry:
            return ({"run": str(run), "planned": planned},
                    f"not built, and no run loaded: there is no run at {run} (make demo, or RUN=PATH)")
        raise SystemExit(f"bench-gpu: there is no run at {run}; train one first (make demo) or pass RUN=PATH")
    loaded = load_run(run)
    info: dict[str, Any] = {"run": str(run), "arch": loaded.config.arch, "dataset": loaded.config.dataset,
                            "tensorrt": tensorrt_status() or "available", "planned": planned}
    if dry:
        return info, f"not built: TensorRT engines need a CUDA GPU (TensorRT here: {info['tensorrt']})"
    for precision in ("fp32", "fp16"):
        art = work / f"art-{precision}"
        export_run(run, art, options=ExportOptions(trt=True, precision=precision))
        info[f"artifact_{precision}"] = str(art)
    return info, None


def item_parity(info: dict[str, Any], dry: bool) -> tuple[dict[str, Any], str | None]:
    """Parity of both artifacts through the serving runners, without writing into them."""
    if dry:
        return {}, "not run: it checks the TensorRT engines and ONNX Runtime's CUDA runner against PyTorch"
    from atld_deploy.export.verify import verify_artifacts

    out = {}
    for precision in ("fp32", "fp16"):
        report = verify_artifacts(info[f"artifact_{precision}"], backends=["onnxruntime", "tensorrt"], record=False)
        print(report.table())
        out[precision] = {"passed": report.passed}
    return out, None


def item_throughput(info: dict[str, Any], dry: bool, iters: int) -> tuple[dict[str, Any], str | None]:
    """Throughput and latency rows per (label, graph, batch), and why any could not run."""
    planned = [f"{label} {graph} b{b}" for label, _, _, graphs in THROUGHPUT for graph in graphs for b in BATCHES]
    if dry:
        return {"planned": planned}, f"not timed ({len(planned)} rows): every row runs on the GPU"
    from atld_deploy.runtime.bench import run_bench

    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    for label, precision, backend, graphs in THROUGHPUT:
        got, missing = run_bench(info[f"artifact_{precision}"], backends=[backend], batch_sizes=BATCHES, iters=iters,
                                 device="cuda", graphs=graphs)
        rows += [{"label": label, **row.to_dict()} for row in got]
        unavailable.update({f"{label}: {k}": v for k, v in missing.items()})
        for row in got:
            print(f"  {label:26s} {row.graph:10s} b{row.batch_size:<4d} {row.images_per_s:10.1f} img/s  "
                  f"p50 {row.p50_ms:7.2f} ms  p95 {row.p95_ms:7.2f} ms")
    for key, why in unavailable.items():
        print(f"  unavailable: {key}: {why}")
    return {"rows": rows, "unavailable": unavailable}, None


def item_train(dry: bool, arch: str, batch: int, iters: int) -> tuple[dict[str, Any], str | None]:
    """The ATLD / FGSM-RS step ratio on the GPU, fp32 and --amp --channels-last (dry: one tiny CPU round)."""
    from bench_train import measure_ratio

    if dry:
        probe = measure_ratio("wrn-10-1", 2, 8, 1, 1, "cpu", d_body=(10, 1))
        return {"cpu_probe_ratio": probe["ratio"]}, (
            "not measured on a GPU (the harness ran one tiny CPU round to check itself: wrn-10-1 and a WRN-10-1 "
            "discriminator, batch 2, 8x8)")
    out = {}
    for name, amp in (("fp32", False), ("amp_channels_last", True)):
        r = measure_ratio(arch, batch, 32, iters, 3, "cuda", amp=amp, channels_last=amp)
        print(f"  train {name}: ATLD / FGSM-RS step = {r['ratio']:.2f}x ({r['atld_images_per_s']:.0f} vs "
              f"{r['fgsm_rs_images_per_s']:.0f} images/s)")
        out[name] = r
    return out, None


def keep_existing(out: Path) -> bool:
    """True when `out` holds a GPU run's figures, which a dry run must not replace."""
    try:
        return not json.loads(out.read_text())["figures"].get("dry", True)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Run every item (or dry-run them); returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("demo/run"), help="the trained ATLD run to export")
    ap.add_argument("--out", type=Path, default=Path("docs/measurements/bench_gpu.json"))
    ap.add_argument("--dry", action="store_true", default=os.environ.get("DRY", "") not in ("", "0"))
    ap.add_argument("--iters", type=int, default=50, help="timed calls per throughput row")
    ap.add_argument("--train-arch", default="wrn-28-10")
    ap.add_argument("--train-batch", type=int, default=50)
    args = ap.parse_args(argv)

    why = dry_reason(args.dry)
    dry = why is not None
    print(f"bench-gpu: DRY MODE ({why}): nothing is timed on a GPU; each item says what it skipped"
          if dry else "bench-gpu: CUDA GPU found, running every item", flush=True)
    figures: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def item(name: str, fn: Callable[[], tuple[dict[str, Any], str | None]]) -> None:
        print(f"[{name}]", flush=True)
        result, skip = fn()
        figures[name] = result
        if skip:
            skipped[name] = skip
            print(f"  SKIPPED {name}: {skip}")

    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        item("engines", lambda: item_engines(args.run, Path(tmp), dry))
        info = figures["engines"]
        item("parity", lambda: item_parity(info, dry))
        item("throughput", lambda: item_throughput(info, dry, args.iters))
        item("train", lambda: item_train(dry, args.train_arch, args.train_batch, 5))

    record = {"dry": dry, "dry_reason": why, "skipped": skipped, "batches": list(BATCHES), **figures}
    if dry and keep_existing(args.out):
        print(f"kept {args.out}: it holds a GPU run's figures, which a dry run does not replace")
    else:
        from atld_deploy.measure import write_measurement

        write_measurement(args.out, "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv), record)
        print(f"wrote {args.out}")
    print(f"bench-gpu: {'dry run, skipped: ' + ', '.join(skipped) if dry else 'done'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

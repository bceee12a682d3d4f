"""`bench`: raw throughput (images/s) and latency (p50/p95 ms per batch) of each backend on an artifact.

Inputs are random float32 images in [0, 1] already in the graph's layout (and, on cuda, already on the GPU),
so the figures are the backend's own speed: no decoding, no host/device copies of the input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AtldError, ConfigError
from ..signing import open_artifact
from .classifier import Classifier
from .select import open_runner

log = logging.getLogger(__name__)

GRAPHS = ("classifier", "pipeline")


@dataclass(frozen=True)
class BenchRow:
    """One measurement: a backend running a graph at a batch size."""

    backend: str
    graph: str
    batch_size: int
    iters: int
    images_per_s: float
    p50_ms: float
    p95_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(fn: Callable[[], Any], iters: int, warmup: int = 3, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of `iters` calls of `fn` after `warmup` untimed ones (`sync` after each, for GPUs)."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t)
    return times


def row_from_times(backend: str, graph: str, batch: int, times: Sequence[float]) -> BenchRow:
    """Summarise per-call times of batches of `batch` images."""
    arr = np.asarray(times)
    return BenchRow(backend, graph, batch, len(arr), float(batch * len(arr) / arr.sum()),
                    float(np.percentile(arr, 50) * 1e3), float(np.percentile(arr, 95) * 1e3))


def bench_classifier(clf: Classifier, batch_size: int, iters: int, seed: int = 0) -> BenchRow:
    """Time `clf`'s runner on random [0,1] batches of `batch_size` (the raw figure `infer` is compared against)."""
    rng = np.random.default_rng(seed)
    spec = clf.runner.inputs[0]
    x: Any = rng.random((batch_size, clf.channels, clf.size, clf.size), dtype=np.float32)
    sync = None
    if clf.device == "cuda":
        import torch

        x = torch.from_numpy(x).cuda()
        sync = torch.cuda.synchronize
    times = time_calls(lambda: clf.runner.infer({spec.name: x}), iters, sync=sync)
    return row_from_times(clf.runner.describe(), clf.graph, batch_size, times)


def run_bench(
    art: str | Path,
    backends: Sequence[str] = ("auto",),
    batch_sizes: Sequence[int] = (1, 8, 64),
    iters: int = 20,
    device: str = "auto",
    graphs: Sequence[str] = GRAPHS,
    on_row: Callable[[BenchRow], None] | None = None,
    allow_unverified: bool = False,
    public_key: str | Path | None = None,
) -> tuple[list[BenchRow], dict[str, str]]:
    """Benchmark each requested backend on each graph and batch size.

    Args:
        backends: backend names (`auto`, `tensorrt`, `onnxruntime`, `torch`, or `all` for every one available).
        allow_unverified, public_key: the serving gate, as for `Classifier.load`.
        on_row: called as each row is measured (the CLI prints progress with it).

    Returns:
        The rows, and for each requested backend that could not run, the reason.

    Raises:
        ConfigError: bad batch sizes or iteration count.
        ExportError: the artifact is missing or tampered with.
    """
    if iters < 1 or any(b < 1 for b in batch_sizes):
        raise ConfigError(f"iterations and batch sizes must be at least 1, got iters={iters}, batch sizes={list(batch_sizes)}")
    art = Path(art)
    manifest = open_artifact(art, allow_unverified=allow_unverified, public_key=public_key)
    names = ("tensorrt", "onnxruntime", "torch") if list(backends) == ["all"] else tuple(backends)
    rows: list[BenchRow] = []
    unavailable: dict[str, str] = {}
    for name in names:
        for graph in graphs:
            if graph not in manifest.graphs:
                unavailable[f"{name}/{graph}"] = f"the artifact has no {graph!r} graph"
                continue
            try:
                runner, passed = open_runner(art, manifest, graph, backend=name, device=device)
            except AtldError as e:
                unavailable[f"{name}/{graph}"] = str(e)
                continue
            clf = Classifier(art, manifest, graph, runner, passed)
            try:
                for b in batch_sizes:
                    if runner.max_batch is not None and b > runner.max_batch:
                        unavailable[f"{runner.describe()}/{graph}/b{b}"] = f"above the engine's max batch {runner.max_batch}"
                        continue
                    row = bench_classifier(clf, b, iters)
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
            finally:
                clf.close()
    return rows, unavailable


def format_table(rows: Sequence[BenchRow]) -> str:
    """A fixed-width terminal table of `rows`."""
    head = f"{'backend':<34} {'graph':<10} {'batch':>5} {'images/s':>10} {'p50 ms':>8} {'p95 ms':>8}"
    lines = [head, "-" * len(head)]
    lines += [f"{r.backend:<34} {r.graph:<10} {r.batch_size:>5} {r.images_per_s:>10.0f} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f}"
              for r in rows]
    return "\n".join(lines)

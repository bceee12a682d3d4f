"""`infer` end to end vs the backend's raw pipeline throughput, same backend and batch size, one process.

    .venv/bin/python benchmarks/bench_infer.py --artifacts ART [--backend onnxruntime] [--batch 64]
        [--files 4096] [--rounds 3] [--workers N]

Writes a folder of small PNGs (real digits at the model's input size), then alternates `rounds` times:
  raw: `bench`'s measurement (random float32 batches straight into the runner, no decoding);
  e2e: `infer_folder` over the folder (walk + decode on worker threads + batching + inference + JSONL writing).
Prints the CPU cost of decoding one file (with the libpng fast path and with Pillow alone), then the median
images/s of each and the ratio (end to end against raw), and the peak RSS
growth while inferring `files` and `4 x files` images (flat memory: about the same for both).
Without --artifacts, a tiny ATLD run is trained and exported first (minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from atld_deploy.runtime import Classifier, infer_folder
from atld_deploy.runtime.bench import bench_classifier


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class PeakRSS:
    """Samples RSS every 10 ms in a thread; `.growth` is the peak above the RSS at start."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> float:
        return self.peak - self.start


def write_folder(root: Path, n: int, channels: int, size: int) -> Path:
    """`n` PNGs of real digits (cycled, shifted so files differ), 1000 per subfolder."""
    from atld_deploy.data import load_dataset

    x, _ = load_dataset("digits").test.batch(list(range(200)))
    base = (x.numpy()[:, 0] * 255).round().astype(np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i in range(n):
        img = Image.fromarray(np.roll(base[i % len(base)], i // len(base), axis=1), "L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        d = root / f"{i // 1000:04d}"
        d.mkdir(parents=True, exist_ok=True)
        img.convert(mode).save(d / f"{i:07d}.png")
    return root


def print_decode_cost(folder: Path, channels: int, size: int) -> None:
    """CPU per file of `decode_image` (the libpng fast path where it applies) and of Pillow alone, one thread."""
    import io

    from atld_deploy import imageio

    files = sorted(str(p) for p in folder.rglob("*.png"))
    pillow = lambda f: imageio._decode_pillow(io.BytesIO(Path(f).read_bytes()), channels, size, f)  # noqa: E731
    for name, decode in (("decode_image (fast path)", lambda f: imageio.decode_image(f, channels, size)),
                         ("Pillow alone", pillow)):
        best = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            for f in files:
                decode(f)
            best = min(best, (time.process_time() - c0) / len(files) * 1e3)
        print(f"decode CPU per file, {name}: {best:.3f} ms")


def make_artifacts(tmp: Path) -> Path:
    from atld_deploy.config import make_config
    from atld_deploy.export import export_run
    from atld_deploy.train import Trainer

    cfg = make_config("digits", method="atld", arch="wrn-10-1", epochs=2, d_depth=10, d_widen=1, eval_pgd_n=50)
    Trainer(cfg, tmp / "run", progress=False).fit()
    export_run(tmp / "run", tmp / "art")
    return tmp / "art"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--files", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as t:
        tmp = Path(t)
        art = args.artifacts or make_artifacts(tmp)
        clf = Classifier.load(art, backend=args.backend, device=args.device, batch_size=args.batch)
        small = write_folder(tmp / "small", args.files, clf.channels, clf.size)
        print_decode_cost(small, clf.channels, clf.size)
        raw_iters = max(5, args.files // args.batch)
        raw, e2e, cpu_raw, cpu_e2e = [], [], [], []
        load0 = os.getloadavg()[0]
        for r in range(args.rounds):
            c0 = time.process_time()
            raw.append(bench_classifier(clf, args.batch, raw_iters, seed=r).images_per_s)
            cpu_raw.append((time.process_time() - c0) / ((raw_iters + 3) * args.batch) * 1e3)
            c0 = time.process_time()
            s = infer_folder(small, output=tmp / f"p{r}.jsonl", batch_size=args.batch, workers=args.workers,
                             classifier=clf)
            cpu_e2e.append((time.process_time() - c0) / s.classified * 1e3)
            e2e.append(s.classified / s.seconds)
            print(f"round {r + 1}: raw pipeline {raw[-1]:.0f} images/s, infer end to end {e2e[-1]:.0f} images/s; "
                  f"CPU ms/image raw {cpu_raw[-1]:.3f}, end to end {cpu_e2e[-1]:.3f}")
        raw_m, e2e_m = statistics.median(raw), statistics.median(e2e)
        cr, ce = statistics.median(cpu_raw), statistics.median(cpu_e2e)
        print(f"{clf.runner.describe()}, pipeline graph, batch {args.batch}, {args.files} PNGs of "
              f"{clf.size}x{clf.size}x{clf.channels}, {os.cpu_count()} CPUs, load average {load0:.1f} -> "
              f"{os.getloadavg()[0]:.1f} (other processes share the CPUs above ~1 per core)")
        print(f"raw pipeline (bench): {raw_m:.0f} images/s (median of {args.rounds})")
        print(f"infer end to end:     {e2e_m:.0f} images/s (median of {args.rounds})")
        print(f"ratio: {e2e_m / raw_m:.2f} (target >= 0.80)")
        print(f"CPU time per image: raw {cr:.3f} ms, end to end {ce:.3f} ms (decode+write overhead {ce / cr - 1:+.0%}); "
              f"CPU-bound ratio {cr / ce:.2f} (what the wall-clock ratio tends to when the cores are saturated)")
        big = write_folder(tmp / "big", 4 * args.files, clf.channels, clf.size)
        for folder, n in ((small, args.files), (big, 4 * args.files)):
            with PeakRSS() as m:
                infer_folder(folder, output=tmp / f"mem{n}.jsonl", batch_size=args.batch, workers=args.workers,
                             classifier=clf)
            print(f"peak RSS growth while inferring {n} files: {m.growth:.1f} MiB")
        clf.close()


if __name__ == "__main__":
    main()

"""Images/s of `infer --executor ray` with one actor against local `infer` on the same folder: Ray Data's overhead.

    .venv/bin/python benchmarks/bench_ray.py --artifacts ART [--images 400] [--json docs/measurements/ray.json]

Writes N test-split digits as PNGs into a temporary folder, then classifies it with `infer_folder` (this
process, the default decoder threads) and with `infer_ray` on a local Ray cluster started here with every CPU
(one actor of one CPU, --backend onnxruntime for both). The cluster's start is timed apart: `ray_seconds` is
the job alone, as on a cluster that is already up; `ray_init_seconds` is what a one-off run on a fresh local
cluster adds. The ratio ray/local (images/s) is the engine's overhead on one machine -- below 1 means Ray Data
costs throughput here, and its gain is only across machines or GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atld_deploy.measure import write_measurement  # noqa: E402


def write_digits(root: Path, n: int) -> Path:
    """`n` test-split digits (cycled) as 8x8 grayscale PNGs in 10 subfolders."""
    from atld_deploy.data import load_dataset

    test = load_dataset("digits").test
    x, _ = test.batch(list(range(min(n, len(test)))))
    for i in range(n):
        img = (x[i % len(x)][0].numpy() * 255).round().astype(np.uint8)
        (root / f"{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(root / f"{i % 10}/{i:06d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (docs/measurements/ray.json)")
    args = ap.parse_args()

    import ray

    from atld_deploy.runtime import infer_folder
    from atld_deploy.runtime.ray_data import infer_ray

    with tempfile.TemporaryDirectory() as tmp:
        images = write_digits(Path(tmp) / "images", args.images)
        local = infer_folder(images, args.artifacts, Path(tmp) / "local.jsonl", backend="onnxruntime",
                             batch_size=args.batch_size)
        print(f"local: {local.line()}")
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0
        try:
            remote = infer_ray(images, args.artifacts, Path(tmp) / "ray.jsonl", actors=1, cpus_per_actor=1,
                               backend="onnxruntime", imt=True, batch_size=args.batch_size, progress=False)
        finally:
            ray.shutdown()
        print(f"ray:   {remote.line()} (+{init_s:.1f} s to start the cluster)")
    ratio = remote.images_per_s / local.images_per_s
    print(f"ray / local images/s: {ratio:.2f}x")
    if args.json is not None:
        figures = {"images": args.images, "batch_size": args.batch_size,
                   "local_images_per_s": round(local.images_per_s, 1), "local_seconds": round(local.seconds, 2),
                   "ray_images_per_s": round(remote.images_per_s, 1), "ray_seconds": round(remote.seconds, 2),
                   "ray_init_seconds": round(init_s, 2), "ray_over_local": round(ratio, 3),
                   "ray_pool": remote.backend}
        command = " ".join(["benchmarks/bench_ray.py", *sys.argv[1:]])
        print(f"wrote {write_measurement(args.json, command, figures, ray_version=metadata.version('ray'))}")


if __name__ == "__main__":
    main()

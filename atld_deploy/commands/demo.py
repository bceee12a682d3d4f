"""`atld-deploy demo`: every stage end to end on the embedded digits (what `make demo` runs).

train (resumable) -> eval (published + adaptive + worst case) -> export (ONNX, static checks, parity)
-> a folder of sample images written from the digits test split -> infer over that folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from ..cli_app import app

SAMPLES_PER_CLASS = 10


def write_sample_images(folder: Path, per_class: int = SAMPLES_PER_CLASS) -> int:
    """Write held-out digits as PNG/JPEG/BMP files under folder/<class>/; returns how many."""
    import numpy as np
    from PIL import Image

    from ..data import load_dataset

    test = load_dataset("digits").test
    counts: dict[int, int] = {}
    formats = ("png", "bmp", "png", "jpg")
    for i in range(len(test)):
        label = int(test.labels[i])
        k = counts.get(label, 0)
        if k >= per_class:
            continue
        counts[label] = k + 1
        pixels = (test.images[i, 0].numpy().astype(np.float32) / 16 * 255).round().astype(np.uint8)
        ext = formats[k % len(formats)]
        path = folder / str(label) / f"test{i:03d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        # JPEG is lossy: store it 4x larger so the resize back to 8x8 recovers the digit
        img = Image.fromarray(pixels, mode="L")
        (img.resize((32, 32), Image.Resampling.NEAREST) if ext == "jpg" else img).save(path, quality=95)
    return sum(counts.values())


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo"), help="Where the run, report, artifacts, samples and predictions go."),
    epochs: int = typer.Option(15, help="Training epochs on digits (lr x0.1 after 2/3 and 5/6 of them)."),
    n: int = typer.Option(200, help="Test examples for the robustness evaluation."),
    fresh: bool = typer.Option(False, help="Start over instead of resuming what a previous demo left."),
) -> None:
    """Train ATLD on the embedded digits, evaluate it, export it to ONNX, and classify a folder of images."""
    from ..config import make_config
    from ..evaluate import evaluate_run, format_table
    from ..export import export_run
    from ..io import write_json_atomic
    from ..runtime import infer_folder
    from ..train import Trainer

    t_all = time.perf_counter()
    run_dir, art, samples = workdir / "run", workdir / "artifacts", workdir / "samples"
    preds = workdir / "predictions.jsonl"

    t0 = time.perf_counter()
    cfg = make_config("digits", epochs=epochs, lr_milestones=(epochs * 2 // 3, epochs * 5 // 6))
    resume = (run_dir / "checkpoint.pt").exists() and not fresh
    typer.echo(f"[1/4] train: ATLD {cfg.arch} on digits, {epochs} epochs, eps {cfg.eps} -> {run_dir}"
               f"{' (resuming)' if resume else ''}")
    result = Trainer(cfg, run_dir, resume=resume, overwrite=fresh and run_dir.exists()).fit()
    typer.echo(f"      clean {result.clean_acc:.2%}, PGD-20 {result.pgd_acc:.2%} at eps {cfg.eps} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    typer.echo(f"[2/4] eval: published, adaptive and worst-case protocols on {n} test examples")
    report = evaluate_run(run_dir, n=n)
    write_json_atomic(workdir / "eval.json", report.records)
    typer.echo(format_table(report))
    typer.echo(f"      -> {workdir / 'eval.json'} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    typer.echo(f"[3/4] export: classifier, discriminator and the IMT+ pipeline as ONNX, checked and parity-verified -> {art}")
    manifest = export_run(run_dir, art, echo=typer.echo)
    typer.echo(f"      verified: {manifest.verified} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    count = write_sample_images(samples)
    typer.echo(f"[4/4] infer: {count} held-out digits written as PNG/BMP/JPEG under {samples}")
    summary = infer_folder(samples, art, output=preds, overwrite=True)
    lines = [json.loads(l) for l in preds.read_text().splitlines()]
    correct = sum(1 for r in lines if "label" in r and r["path"].split("/")[0] == r["class"])
    typer.echo(f"      {summary}; {correct}/{len(lines)} match their folder's digit -> {preds} ({time.perf_counter() - t0:.0f} s)")
    typer.echo(f"demo finished in {time.perf_counter() - t_all:.0f} s")

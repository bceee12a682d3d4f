"""`atld-deploy demo`: every stage end to end on the embedded digits (what `make demo` runs).

train (resumable) -> eval (published + adaptive + worst case) -> export (ONNX, static checks, parity)
-> a folder of sample images written from the digits test split -> infer over that folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

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
    seed: int = typer.Option(0, help="Training and evaluation seed."),
    record: Optional[Path] = typer.Option(None, "--record", help="Also write every figure the demo prints to this "
                                          "measurement file (JSON with the machine, load and versions)."),
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
    cfg = make_config("digits", epochs=epochs, seed=seed)
    resume = (run_dir / "checkpoint.pt").exists() and not fresh
    typer.echo(f"[1/4] train: ATLD {cfg.arch} on digits, {epochs} epochs, eps {cfg.eps} -> {run_dir}"
               f"{' (resuming)' if resume else ''}")
    result = Trainer(cfg, run_dir, resume=resume, overwrite=fresh and run_dir.exists(),
                     echo=lambda line: typer.echo(line, err=True)).fit()
    typer.echo(f"      clean {result.clean_acc:.2%}, PGD-20 {result.pgd_acc:.2%} at eps {cfg.eps} ({time.perf_counter() - t0:.0f} s)")

    typer.echo(f"[2/4] eval: published, adaptive and worst-case protocols on {n} test examples")
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = evaluate_run(run_dir, n=n, seed=seed)
    write_json_atomic(workdir / "eval.json", report.records)
    typer.echo(format_table(report))
    eval_s = time.perf_counter() - t0
    typer.echo(f"      -> {workdir / 'eval.json'} ({eval_s:.0f} s)")

    t0 = time.perf_counter()
    typer.echo(f"[3/4] export: classifier, discriminator and the IMT+ pipeline as ONNX, checked and parity-verified -> {art}")
    manifest = export_run(run_dir, art, echo=typer.echo)
    export_s = time.perf_counter() - t0
    typer.echo(f"      verified: {manifest.verified} ({export_s:.0f} s)")

    t0 = time.perf_counter()
    count = write_sample_images(samples)
    typer.echo(f"[4/4] infer: {count} held-out digits written as PNG/BMP/JPEG under {samples}")
    summary = infer_folder(samples, art, output=preds, overwrite=True)
    lines = [json.loads(l) for l in preds.read_text().splitlines()]
    correct = sum(1 for r in lines if "label" in r and r["path"].split("/")[0] == r["class"])
    typer.echo(f"      {summary}; {correct}/{len(lines)} match their folder's digit -> {preds} ({time.perf_counter() - t0:.0f} s)")
    infer_s = time.perf_counter() - t0
    typer.echo(f"demo finished in {time.perf_counter() - t_all:.0f} s")
    if record is not None:
        from ..measure import write_measurement

        figures = {
            "train_clean_acc": result.clean_acc, "train_pgd20_acc": result.pgd_acc, "verified": manifest.verified,
            "infer_correct": correct, "infer_files": len(lines),
            "eval": {f"{r['model']}/{r['protocol']}/{r['attack']}": r["accuracy"] for r in report.records},
            "seconds": {"train": round(train_s, 1), "eval": round(eval_s, 1), "export": round(export_s, 1),
                        "infer": round(infer_s, 1), "all": round(time.perf_counter() - t_all, 1)},
        }
        command = f"atld-deploy demo --workdir {workdir} --epochs {epochs} --n {n} --seed {seed} --fresh --record {record}"
        typer.echo(f"wrote {write_measurement(record, command, figures, settings={'epochs': epochs, 'n': n, 'seed': seed})}")

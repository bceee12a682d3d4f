"""`atld-deploy demo`: every stage end to end on the embedded digits (what `make demo` runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from ..cli_app import app


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo"), help="Where the run, artifacts and sample images go."),
    epochs: int = typer.Option(20, help="Training epochs on digits."),
    fresh: bool = typer.Option(False, help="Start over instead of resuming what a previous demo left."),
) -> None:
    """Train ATLD on the embedded digits, then run every later stage on the result."""
    from ..config import make_config
    from ..train import Trainer

    t0 = time.perf_counter()
    run_dir = workdir / "run"
    resume = (run_dir / "checkpoint.pt").exists() and not fresh
    cfg = make_config("digits", epochs=epochs)
    typer.echo(f"[1/1] train: ATLD {cfg.arch} on digits, {epochs} epochs, eps {cfg.eps} -> {run_dir}")
    result = Trainer(cfg, run_dir, resume=resume, overwrite=fresh and run_dir.exists()).fit()
    summary = json.loads((run_dir / "summary.json").read_text())
    typer.echo(f"      clean {summary['clean_acc']:.2%}, PGD-20 {summary['pgd20_acc']:.2%} at eps {cfg.eps}")
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s; run: {result.path}")

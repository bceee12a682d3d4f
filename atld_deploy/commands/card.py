"""`atld-deploy card`: write the robustness card into an existing artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..cli_app import app
from .evaluate import DEFAULT_ATTACKS_HELP


@app.command()
def card(
    art: Path = typer.Argument(..., help="Artifact directory written by `atld-deploy export` (with its run/ copy)."),
    n: int = typer.Option(500, help="Test images the card evaluates (the subset `eval --n N --seed S` draws); the "
                          "temperature and threshold are fitted on test images outside it."),
    detector_fpr: float = typer.Option(0.05, "--detector-fpr", help="False-positive rate on clean images the p_natural "
                                       "threshold is set at."),
    attacks: str = typer.Option(DEFAULT_ATTACKS_HELP, help="Attacks of the evaluation (as for `eval`)."),
    seed: int = typer.Option(0, help="Seeds the image subset and every attack's random start."),
    eps: Optional[float] = typer.Option(None, help="Attack budget in [0,1] pixel units (default: the run's training eps)."),
    batch_size: int = typer.Option(500, help="Images attacked at once."),
    square_queries: int = typer.Option(100, help="Square's query budget."),
    threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)."),
) -> None:
    """Evaluate the artifact's run on its test split and record the evidence in the artifact: per IMT mode clean,
    published and adaptive accuracy and the worst case; a calibration temperature; a p_natural threshold; CARD.md
    with two figures. Removes a signature (sign again)."""
    import torch

    from ..evaluate.calibration import heldout_line
    from ..evaluate.card import write_card
    from ..gate import LABELS

    if threads > 0:
        torch.set_num_threads(threads)

    def progress(o: Any) -> None:
        typer.echo(f"  {o.model:<6} {o.protocol:<10} {o.attack:<14} {100 * o.accuracy:6.2f}%", err=True)

    manifest = write_card(art, n=n, fpr=detector_fpr, seed=seed, attacks=attacks, eps=eps, batch_size=batch_size,
                          square_queries=square_queries, on_outcome=progress, echo=lambda s: typer.echo(s, err=True))
    c, cal, det = manifest.card, manifest.calibration, manifest.detector
    for m, r in c["modes"].items():
        typer.echo(f"{LABELS[m]:>7}: clean {100 * r['clean']:.1f}%, worst case {100 * r['worst_case']:.1f}% "
                   f"(+-{100 * r['worst_case_half_width']:.1f}); temperature {cal['temperature'][m]:.3f}, ECE "
                   f"{100 * cal['ece_before'][m]:.2f}% -> {100 * cal['ece_after'][m]:.2f}%")
    if det:
        typer.echo(f"detector: threshold {det['threshold']:.4f} at FPR {100 * det['fpr']:.1f}% (the k-th "
                   f"smallest, k={det['k']}, of {det['n_fit']} fitting images); {heldout_line(det)}")
    typer.echo(f"verdict: {c['verdict']}")
    typer.echo(f"wrote {art / 'CARD.md'} and the card in {art / 'manifest.json'} ({c['seconds']:.0f} s)")

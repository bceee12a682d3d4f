"""`atld-deploy eval`, `atld-deploy reproduce`, `atld-deploy figures`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app



@app.command("eval")
def eval_(
    run: Path = typer.Argument(..., help="Run directory written by `atld-deploy train`."),
    attacks: Optional[str] = typer.Option(None, help="Comma-separated: clean,fgsm,pgd20,pgd100,cw20,cw100,apgd-ce,"
                                          "apgd-t,square,autoattack,pgd20-smooth,pgd20-imtloss (the last two: adaptive "
                                          "only). Default: atld_deploy.evaluate.DEFAULT_ATTACKS (see the README)."),
    models: str = typer.Option("static,imt,imt+", help="static,imt,imt+ (baselines without a discriminator: static)."),
    protocol: str = typer.Option("published,adaptive,worst-case", help="published,adaptive,worst-case"),
    n: int = typer.Option(500, help="Test examples: a fixed subset drawn with --seed (capped at the split's size)."),
    eps: Optional[float] = typer.Option(None, help="Attack budget in [0,1] pixel units (default: the run's training eps)."),
    batch_size: int = typer.Option(500, help="Examples attacked at once."),
    seed: int = typer.Option(0, help="Seeds the example subset and every attack's random start."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON (atomically)."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as markdown (atomically)."),
    square_queries: int = typer.Option(100, help="Square's query budget (more: stronger and slower; reproduce uses 300)."),
    threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)."),
) -> None:
    """Evaluate a run under the published protocol, adaptive attacks on the deployed IMT pipeline, and the
    per-example worst case; print a Table-1-style table with the checks' warnings."""
    import torch

    from ..evaluate import evaluate_run, format_markdown, format_table
    from ..io import write_bytes_atomic, write_json_atomic

    if threads > 0:
        torch.set_num_threads(threads)

    def progress(o: object) -> None:
        typer.echo(f"  {o.model:<6} {o.protocol:<10} {o.attack:<14} {100 * o.accuracy:6.2f}%  ({o.seconds:.1f} s)",  # type: ignore[attr-defined]
                   err=True)

    from ..evaluate import DEFAULT_ATTACKS

    report = evaluate_run(run, attacks=attacks or ",".join(DEFAULT_ATTACKS), models=models, protocols=protocol, n=n, eps=eps,
                          batch_size=batch_size, seed=seed, square_queries=square_queries, on_outcome=progress)
    typer.echo(format_table(report))
    typer.echo(f"evaluated {report.meta['n']} examples in {report.meta['seconds']:.0f} s")
    if json_out is not None:
        write_json_atomic(json_out, report.records)
        typer.echo(f"wrote {json_out}")
    if markdown_out is not None:
        write_bytes_atomic(markdown_out, format_markdown(report).encode())
        typer.echo(f"wrote {markdown_out}")


@app.command()
def reproduce(
    out: Path = typer.Option(Path("docs/REPRODUCTION.md"), help="Where the report goes (written atomically)."),
    workdir: Path = typer.Option(Path("runs/reproduce"), help="Run directories (one per method); reused and resumed."),
    epochs: int = typer.Option(15, help="Training epochs, the same for every method."),
    n: int = typer.Option(300, help="Test examples evaluated (the same seeded subset for every model)."),
    arch: str = typer.Option("wrn-10-1", help="Classifier of every method."),
    seed: int = typer.Option(0, help="Training and evaluation seed."),
    threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)."),
) -> None:
    """Train standard, pgd-at, feature-scattering and atld on digits with equal budgets, evaluate each under
    the published and adaptive protocols, and write the Table 1 analogue with commands, seeds and wall time."""
    import shlex

    import torch

    from ..evaluate.reproduce import ReproSettings
    from ..evaluate.reproduce import reproduce as run_reproduction

    if threads > 0:
        torch.set_num_threads(threads)
    settings = ReproSettings(workdir=workdir, epochs=epochs, n=n, seed=seed, arch=arch)
    # the resolved options, not sys.argv: the same under a test runner, and every default spelled out
    command = " ".join(["atld-deploy reproduce", "--out", shlex.quote(str(out)), "--workdir", shlex.quote(str(workdir)),
                        "--epochs", str(epochs), "--n", str(n), "--arch", arch, "--seed", str(seed)]
                       + (["--threads", str(threads)] if threads > 0 else []))
    run_reproduction(settings, out, echo=typer.echo, command=command)


@app.command()
def figures(
    out: Path = typer.Option(Path("docs/figures"), help="Folder for the PNGs."),
    seed: int = typer.Option(0, help="Data and training seed."),
    epochs: int = typer.Option(60, help="Training epochs of each toy model."),
) -> None:
    """The paper's toy illustrations on two moons: perturbations of PGD vs Feature Scattering vs ATLD (Fig 1/4),
    the vector field of perturbation directions (Fig 6), and IMT moving attacked points back (Fig 7)."""
    import time

    from ..evaluate.figures import make_figures

    t0 = time.perf_counter()
    for path in make_figures(out, seed=seed, epochs=epochs):
        typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    typer.echo(f"figures done in {time.perf_counter() - t0:.0f} s")

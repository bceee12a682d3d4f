"""`atld-deploy eval`, `atld-deploy reproduce`, `atld-deploy figures`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app
from . import options

# the default attack list as `eval --help` shows it; tests/test_cli_reference.py keeps it equal to DEFAULT_ATTACKS
DEFAULT_ATTACKS_HELP = "clean,fgsm,pgd20,cw20,apgd-ce,square,pgd20-smooth,pgd20-imtloss"
EVAL_MODEL_NAMES = {"static": "static", "imt": "imt", "imt-plus": "imt+"}  # the evaluation's own model names


@app.command("eval")
def eval_(
    run: Path = typer.Argument(..., help="Run directory written by `atld-deploy train`."),
    attacks: str = typer.Option(DEFAULT_ATTACKS_HELP, help="Comma-separated, any of: clean,fgsm,pgd20,pgd100,cw20,cw100,"
                                "apgd-ce,apgd-t,square,autoattack,pgd20-smooth,pgd20-imtloss (the last two: adaptive "
                                "only)."),
    models: str = typer.Option("static,imt,imt-plus", help="IMT modes to evaluate: static,imt,imt-plus (baselines "
                               "without a discriminator: static)."),
    protocol: str = typer.Option("published,adaptive,worst-case", help="published,adaptive,worst-case"),
    n: int = typer.Option(500, help="Test examples: a fixed subset drawn with --seed (capped at the split's size)."),
    eps: Optional[float] = typer.Option(None, help="Attack budget in [0,1] pixel units (default: the run's training eps)."),
    batch_size: int = typer.Option(500, help="Examples attacked at once."),
    seed: int = typer.Option(0, help="Seeds the example subset and every attack's random start."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the records as JSON (atomically)."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as markdown (atomically)."),
    square_queries: int = typer.Option(100, help="Square's query budget (more: stronger and slower; reproduce uses 300)."),
    threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)."),
    device: str = typer.Option("auto", help="auto | cpu (the evaluation runs on the CPU in this release; cuda is refused)."),
) -> None:
    """Evaluate a run under the published protocol, adaptive attacks on the deployed IMT pipeline, and the
    per-example worst case; print a Table-1-style table with the checks' warnings."""
    import torch

    from ..errors import ConfigError

    if device.strip().lower() not in ("auto", "cpu"):
        raise ConfigError(f"--device {device}: the evaluation runs on the CPU in this release; use --device cpu")
    models = ",".join(EVAL_MODEL_NAMES[m] for m in options.imt_modes(models))

    from ..evaluate import evaluate_run, format_markdown, format_table
    from ..evaluate.report import verdict_line
    from ..io import write_bytes_atomic, write_json_atomic

    if threads > 0:
        torch.set_num_threads(threads)

    def progress(o: object) -> None:
        typer.echo(f"  {o.model:<6} {o.protocol:<10} {o.attack:<14} {100 * o.accuracy:6.2f}%  ({o.seconds:.1f} s)",  # type: ignore[attr-defined]
                   err=True)

    import time

    t_start = time.perf_counter()

    def overall(done: int, total: int, what: str) -> None:
        spent = time.perf_counter() - t_start
        eta = spent / done * (total - done)
        typer.echo(f"[{done}/{total}] {what} done; {spent:.0f} s so far, ETA {eta:.0f} s", err=True)

    report = evaluate_run(run, attacks=attacks, models=models, on_progress=overall, protocols=protocol, n=n, eps=eps,
                          batch_size=batch_size, seed=seed, square_queries=square_queries, on_outcome=progress)
    typer.echo(format_table(report))
    typer.echo(verdict_line(report))
    typer.echo(f"evaluated {report.meta['n']} examples in {report.meta['seconds']:.0f} s")
    if json_out is not None:
        write_json_atomic(json_out, report.records)
        typer.echo(f"wrote {json_out}")
    if markdown_out is not None:
        write_bytes_atomic(markdown_out, format_markdown(report).encode())
        typer.echo(f"wrote {markdown_out}")


@app.command()
def reproduce(
    output: Path = typer.Option(Path("docs/REPRODUCTION.md"), "--output", "-o", help="Where the report goes (written atomically)."),
    out: Optional[Path] = options.hidden("--out"),
    workdir: Path = typer.Option(Path("runs/reproduce"), help="Run directories (one per method); reused and resumed."),
    epochs: int = typer.Option(15, help="Training epochs, the same for every method."),
    n: int = typer.Option(300, help="Test examples evaluated (the same seeded subset for every model)."),
    arch: str = typer.Option("wrn-10-1", help="Classifier of every method."),
    seed: int = typer.Option(0, help="Training and evaluation seed (the first, with --seeds)."),
    seeds: int = typer.Option(1, help="How many seeds (seed, seed+1, ...): each trains and evaluates every method; "
                              "the report gives every figure's spread over them."),
    threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)."),
) -> None:
    """Train standard, pgd-at, feature-scattering and atld on digits with equal budgets, evaluate each under
    the published and adaptive protocols, and write the Table 1 analogue with commands, seeds and wall time."""
    import shlex

    out = options.either(output, out, "--output", "--out", default=Path("docs/REPRODUCTION.md"))

    import torch

    from ..evaluate.reproduce import ReproSettings
    from ..evaluate.reproduce import reproduce as run_reproduction

    if threads > 0:
        torch.set_num_threads(threads)
    settings = ReproSettings(workdir=workdir, epochs=epochs, n=n, seed=seed, arch=arch, seeds=seeds)
    # the resolved options, not sys.argv: the same under a test runner, and every default spelled out
    command = " ".join(["atld-deploy reproduce", "--output", shlex.quote(str(out)), "--workdir", shlex.quote(str(workdir)),
                        "--epochs", str(epochs), "--n", str(n), "--arch", arch, "--seed", str(seed), "--seeds", str(seeds)]
                       + (["--threads", str(threads)] if threads > 0 else []))
    run_reproduction(settings, out, echo=typer.echo, command=command)


@app.command()
def figures(
    output: Path = typer.Option(Path("docs/figures"), "--output", "-o", help="Folder for the PNGs."),
    out: Optional[Path] = options.hidden("--out"),
    seed: int = typer.Option(0, help="Data and training seed."),
    epochs: int = typer.Option(60, help="Training epochs of each toy model."),
) -> None:
    """The paper's toy illustrations on two moons: perturbations of PGD vs Feature Scattering vs ATLD (Fig 1/4),
    the vector field of perturbation directions (Fig 6), and IMT moving attacked points back (Fig 7)."""
    import time

    out = options.either(output, out, "--output", "--out", default=Path("docs/figures"))

    from ..evaluate.figures import make_figures

    t0 = time.perf_counter()
    for path in make_figures(out, seed=seed, epochs=epochs):
        typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    typer.echo(f"figures done in {time.perf_counter() - t0:.0f} s")

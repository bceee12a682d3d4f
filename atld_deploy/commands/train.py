"""`atld-deploy train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app
from . import options

# Shown under `train --help`; tests/test_cli_reference.py keeps it equal to atld_deploy.config.PRESETS.
PRESETS_HELP = """Presets: what --dataset fills in for every option not given (lr x0.1 at each milestone, a fraction of the run):

  digits    wrn-10-2   30 epochs, batch 50, lr 0.1,  milestones 0.667,0.833, eps 0.2

  cifar10   wrn-28-10  400 epochs, batch 50, lr 0.1,  milestones 0.15,0.225, eps 8/255

  cifar100  wrn-28-10  400 epochs, batch 50, lr 0.1,  milestones 0.15,0.225, eps 8/255, MSE weight scale/10

  svhn      wrn-28-10  400 epochs, batch 50, lr 0.01, milestones 0.15,0.225, eps 8/255, IMT+ band 0.3-0.6

  folder    wrn-16-4   100 epochs, batch 64, lr 0.1,  milestones 0.5,0.75, eps 8/255
"""


def _given(ctx: typer.Context, name: str) -> bool:
    """True if option `name` was set on the command line or through its environment variable."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command(epilog=PRESETS_HELP)
def train(
    ctx: typer.Context,
    output: Optional[Path] = typer.Option(None, "--output", "-o", show_default=False,
                                          help="Run directory to create (required; refused if it holds anything but a "
                                               "run of ours, and a run unless --resume/--overwrite)."),
    out: Optional[Path] = options.hidden("--out"),
    dataset: str = typer.Option("digits", help="digits (embedded, no download) | cifar10 | cifar100 | svhn | folder"),
    data_dir: Optional[Path] = typer.Option(None, help="Where the data set lives (cifar/svhn/folder)."),
    download: bool = typer.Option(False, help="Download cifar10/cifar100/svhn into --data-dir first."),
    method: str = typer.Option("atld", help="atld | standard | pgd-at | fgsm-rs | feature-scattering"),
    arch: Optional[str] = typer.Option(None, help="Classifier, e.g. wrn-28-10, wrn-16-4, wrn-10-2 (default: the data set's preset)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the data set's preset)."),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None, help="Classifier learning rate."),
    lr_milestones: Optional[str] = typer.Option(
        None, help="Where the learning rate drops x0.1: fractions of the run (0.5,0.75) or epoch numbers (50,75); "
                   "default: the preset's fractions."),
    eps: Optional[float] = typer.Option(None, help="Perturbation budget in [0,1] pixel units (CIFAR: 8/255 = 0.0314)."),
    invariance: Optional[str] = typer.Option(None, help="mse (the authors' code) | divergence (the paper's eq. 6)."),
    image_size: Optional[int] = typer.Option(None, help="folder data sets: resize images to this size."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (a CUDA GPU if torch sees one, else the CPU) | cpu | cuda | cuda:N"),
    amp: bool = typer.Option(False, help="bfloat16 autocast (GPU)."),
    channels_last: bool = typer.Option(False, help="channels-last memory format (GPU)."),
    resume: bool = typer.Option(False, help="Continue the run in --output from its last checkpoint (its own configuration; "
                                            "only a longer --epochs may be given)."),
    overwrite: bool = typer.Option(False, help="Replace the run in --output (only a run of ours; the old one is kept aside "
                                               "until the new one's first epoch is saved)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a classifier (ATLD or a baseline) into a run directory."""
    import shlex
    import time

    out = options.either(output, out, "--output", "--out")
    assert out is not None
    if not resume:
        device = options.device(device)

    from ..config import make_config
    from ..train import Trainer
    from ..train.trainer import resumed_config

    values = dict(
        dataset=dataset, data_dir=str(data_dir) if data_dir else None, download=download, method=method, arch=arch,
        epochs=epochs, batch_size=batch_size, lr=lr, lr_milestones=lr_milestones, eps=eps, invariance=invariance,
        image_size=image_size, seed=seed, device=device, amp=amp, channels_last=channels_last,
    )
    if resume:
        from ..run import read_run_meta

        # only what the user typed is compared with the stored run; defaults never override it
        given = {k: v for k, v in values.items() if _given(ctx, k)}
        if "device" in given:
            given["device"] = options.device(given["device"])
        stored = read_run_meta(out)[0] if out.is_dir() else None
        cfg = resumed_config(stored, **given) if stored is not None else None
    else:
        cfg = make_config(values.pop("dataset"), **values)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out, resume=resume, overwrite=overwrite, progress=progress,
                      echo=lambda line: typer.echo(line, err=True))
    cfg = trainer.cfg
    if trainer.finished:
        typer.echo(f"{out} already finished {trainer.start_epoch}/{cfg.epochs} epochs; pass --epochs N to extend it")
        return
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        if trainer.action == "replace" and not (out / "checkpoint.pt").exists():
            typer.echo(f"interrupted before the new run's first epoch was saved: the previous run in {out} was put back "
                       f"as it was", err=True)
        elif (out / "checkpoint.pt").exists():
            typer.echo(f"interrupted; every finished epoch is saved. Continue with: atld-deploy train --output "
                       f"{shlex.quote(str(out))} --resume", err=True)
        else:
            typer.echo(f"interrupted before the first epoch was saved; start again with: atld-deploy train --output "
                       f"{shlex.quote(str(out))} --overwrite ...", err=True)
        raise SystemExit(130) from None
    if not result.is_main:
        return
    typer.echo(
        f"trained {cfg.method} {cfg.arch} on {cfg.dataset} for {result.epochs} epochs in {time.perf_counter() - t0:.0f} s: "
        f"clean {result.clean_acc:.2%}, PGD-20 {result.pgd_acc:.2%} at eps {cfg.eps:.4g} -> {result.path}"
    )

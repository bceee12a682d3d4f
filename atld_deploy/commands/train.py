"""`atld-deploy train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app


def _given(ctx: typer.Context, name: str) -> bool:
    """True if option `name` was set on the command line or through its environment variable."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command()
def train(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Run directory to create (refused if it holds a run, unless --resume/--overwrite)."),
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
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    amp: bool = typer.Option(False, help="bfloat16 autocast (GPU)."),
    channels_last: bool = typer.Option(False, help="channels-last memory format (GPU)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace the run in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a classifier (ATLD or a baseline) into a run directory."""
    import time

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
        stored = read_run_meta(out)[0] if out.is_dir() else None
        cfg = resumed_config(stored, **given) if stored is not None else None
    else:
        cfg = make_config(values.pop("dataset"), **values)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    cfg = trainer.cfg
    if trainer.finished:
        typer.echo(f"{out} already finished {trainer.start_epoch}/{cfg.epochs} epochs; pass --epochs N to extend it")
        return
    result = trainer.fit()
    if not result.is_main:
        return
    typer.echo(
        f"trained {cfg.method} {cfg.arch} on {cfg.dataset} for {result.epochs} epochs in {time.perf_counter() - t0:.0f} s: "
        f"clean {result.clean_acc:.2%}, PGD-20 {result.pgd_acc:.2%} at eps {cfg.eps:.4g} -> {result.path}"
    )

"""`atld-deploy infer` (a folder of images -> predictions file) and `atld-deploy bench` (backend speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app
from . import options

EXIT_SOME_UNREADABLE = 3
ALLOW_UNVERIFIED_HELP = "Serve an artifact whose manifest does not record a passed parity verification."
PUBLIC_KEY_HELP = ("Require a valid signature (`atld-deploy sign`) by this EC public key (PEM); default: "
                   "$ATLD_DEPLOY_TRUST_KEY if set, else no signature check.")


def _int_list(text: str, what: str) -> list[int]:
    from ..errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"{what} must be comma-separated integers like 1,8,64, got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must be positive integers like 1,8,64, got {text!r}")
    return values


@app.command()
def infer(
    images: str = typer.Argument(..., help="Folder of images, walked recursively in sorted order (every non-hidden "
                                 "file), or one image file; with --executor ray also a URI such as s3://bucket/dir/."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", show_default=False,
                                            help="Artifact directory written by `atld-deploy export` (required)."),
    artifacts: Optional[Path] = options.hidden("--artifacts"),
    output: Path = typer.Option(..., "--output", "-o", help="Predictions file: .jsonl or .csv (one line per file)."),
    backend: str = typer.Option("auto", help="auto | tensorrt | onnxruntime | torch"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    batch_size: int = typer.Option(64, help="Images per inference call."),
    imt: str = typer.Option("auto", help="auto (the mode with the best adaptive worst case on the artifact's robustness "
                            "card, ties to the cheaper; without a card the pipeline as exported) | static (the classifier "
                            "graph, p_natural from the discriminator graph) | imt | imt-plus (must be the mode the "
                            "pipeline was exported with)."),
    no_imt: bool = typer.Option(False, "--no-imt", hidden=True),
    workers: Optional[int] = typer.Option(None, help="Decoder threads (default: half the CPUs for a CPU backend, all on a GPU; at most 8)."),
    resume: bool = typer.Option(False, help="Append to --output, skipping files it already lists."),
    overwrite: bool = typer.Option(False, help="Replace an existing --output."),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
    shard: Optional[str] = typer.Option(None, help="i/n: classify only shard i (0-based) of n; join with `atld-deploy merge`."),
    max_pixels: int = typer.Option(40_000_000, help="Refuse (as an error line) images larger than this many pixels "
                                   "before decoding them; bounds each decoder thread's memory."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help=ALLOW_UNVERIFIED_HELP),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help=PUBLIC_KEY_HELP),
    executor: str = typer.Option("local", help="local (this process) | ray (Ray Data: an actor pool, on one machine or a "
                                 "cluster; also writes DIR.parquet; see docs/RAY.md)."),
    ray_address: Optional[str] = typer.Option(None, help="--executor ray: the cluster to join (auto: the one `ray start` "
                                              "or $RAY_ADDRESS names); default: $RAY_ADDRESS if set, else start a local one."),
    ray_actors: Optional[int] = typer.Option(None, help="--executor ray: model actors (default: one per free GPU, else "
                                             "the free CPUs less the one the reads need)."),
    ray_cpus_per_actor: Optional[float] = typer.Option(None, help="--executor ray: CPUs each actor reserves (default 1)."),
    ray_gpus_per_actor: Optional[float] = typer.Option(None, help="--executor ray: GPUs each actor reserves (default 1 "
                                                       "where the cluster has GPUs; a fraction shares one)."),
) -> None:
    """Classify every file under IMAGES; exit 0 if all were classified, 3 if some could not be read."""
    from tqdm import tqdm

    from ..runtime import Classifier, infer_folder
    from ..runtime.folder import check_request, count_files
    from ..runtime.shard import Shard

    art = options.either(artifact, artifacts, "--artifact", "--artifacts")
    assert art is not None
    mode = "static" if no_imt else options.imt_mode(imt, allow=("auto", "static", "imt", "imt-plus"))
    if executor == "ray":  # the same rows from a Ray Data actor pool (runtime/ray_data.py)
        from ..runtime.ray_data import infer_ray_cli

        summary = infer_ray_cli(images, art, output, imt=mode, address=ray_address, actors=ray_actors,
                                cpus_per_actor=ray_cpus_per_actor, gpus_per_actor=ray_gpus_per_actor,
                                backend=backend, device=device, batch_size=batch_size, max_pixels=max_pixels,
                                overwrite=overwrite, allow_unverified=allow_unverified, public_key=public_key,
                                progress=progress, local_only={"--resume": resume, "--shard": shard is not None,
                                                               "--workers": workers is not None})
        typer.echo(summary.line())
        if not summary.all_classified:
            raise SystemExit(EXIT_SOME_UNREADABLE)
        return
    if executor != "local":
        from ..errors import ConfigError

        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    images = Path(images)  # type: ignore[assignment]
    # everything that needs no model first, so a wrong path or an existing output costs nothing
    check_request(images, output, resume, overwrite, batch_size, workers, max_pixels)
    part = Shard.parse(shard) if shard is not None else None
    clf = Classifier.load(art, backend=backend, device=device, imt=mode, batch_size=batch_size,
                          allow_unverified=allow_unverified, public_key=public_key)
    flags = "; writes suspect (p_natural < {:.4f})".format(clf.threshold) if clf.threshold is not None else ""
    typer.echo(f"infer: {clf.runner.describe()} running {clf.graph!r} of {art} ({clf.describe_mode()}{flags})", err=True)
    total = count_files(images) if progress else None
    bar = tqdm(total=total, unit="img", desc="infer", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    try:
        summary = infer_folder(images, output=output, batch_size=batch_size, workers=workers, resume=resume,
                               overwrite=overwrite, classifier=clf, progress=bar.update, shard=part,
                               max_pixels=max_pixels)
    finally:
        bar.close()
        clf.close()
    typer.echo(summary.line())
    if not summary.all_classified:
        # SystemExit, not typer.Exit: click returns typer.Exit's code from app(standalone_mode=False) instead of
        # raising it, and cli.main() ignores that return value.
        raise SystemExit(EXIT_SOME_UNREADABLE)


@app.command()
def bench(
    art: Path = typer.Argument(..., help="Artifact directory written by `atld-deploy export`."),
    backend: str = typer.Option("all", help="Comma-separated: tensorrt,onnxruntime,torch, or all (every available one)."),
    backends: Optional[str] = options.hidden("--backends"),
    batch_sizes: str = typer.Option("1,8,64", help="Comma-separated batch sizes."),
    iters: int = typer.Option(20, help="Timed calls per backend, graph and batch size (after 3 warm-up calls)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help=ALLOW_UNVERIFIED_HELP),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help=PUBLIC_KEY_HELP),
) -> None:
    """Throughput (images/s) and latency (p50/p95 ms per batch) of each backend, classifier and IMT pipeline."""
    import platform

    from ..io import write_json_atomic
    from ..runtime.bench import format_table, run_bench

    backend = options.either(backend, backends, "--backend", "--backends", default="all")
    assert backend is not None
    sizes = _int_list(batch_sizes, "--batch-sizes")
    names = [b.strip() for b in backend.split(",") if b.strip()]
    rows, unavailable = run_bench(art, backends=names, batch_sizes=sizes, iters=iters, device=device,
                                  allow_unverified=allow_unverified, public_key=public_key,
                                  on_row=lambda r: typer.echo(f"  {r.backend} {r.graph} b{r.batch_size}: "
                                                              f"{r.images_per_s:.0f} images/s", err=True))
    typer.echo(format_table(rows))
    for what, why in unavailable.items():
        typer.echo(f"not measured: {what}: {why}")
    if json_out is not None:
        write_json_atomic(json_out, {
            "artifacts": str(art), "machine": platform.platform(), "processor": platform.processor(),
            "rows": [r.to_dict() for r in rows], "unavailable": unavailable,
        })
        typer.echo(f"wrote {json_out}")
    if not rows:
        from ..errors import EngineError

        raise EngineError(f"no backend could be measured: {unavailable}")


@app.command()
def merge(
    inputs: list[Path] = typer.Argument(..., help="The shards' prediction files (.jsonl/.csv)."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged predictions (.jsonl or .csv), written atomically."),
    images: Optional[Path] = typer.Option(None, help="The folder the shards walked: also check every file is covered."),
) -> None:
    """Join the outputs of `infer --shard i/n` into one file with every path once, in walk order."""
    from ..runtime.shard import merge_predictions

    summary = merge_predictions(list(inputs), output, images)
    typer.echo(summary.line())
    if summary.missing:
        raise SystemExit(EXIT_SOME_UNREADABLE)

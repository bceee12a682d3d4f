"""`atld-deploy export` and `atld-deploy verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app
from . import options


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory written by `atld-deploy train`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", show_default=False,
                                          help="Artifact directory to create or replace (required; only an artifact "
                                               "directory of ours is ever replaced)."),
    out: Optional[Path] = options.hidden("--out"),
    imt: str = typer.Option("imt-plus", help="IMT mode of pipeline.onnx: imt-plus | imt | static (static: no step, "
                                             "p_natural only)."),
    eps: float = typer.Option(None, help="IMT step in [0,1] pixel units (default: the run's training eps)."),
    opset: int = typer.Option(18, help="ONNX opset (17-20: parsed by TensorRT 10 and 11)."),
    uint8_input: bool = typer.Option(False, "--uint8-input", help="Also write pipeline_uint8.onnx (uint8 NHWC frames in)."),
    emit_transformed: bool = typer.Option(False, "--emit-transformed", help="pipeline outputs images_imt too."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write pipeline_fp16.onnx and classifier_fp16.onnx (float16 inside, float32 I/O) and check them on ORT CPU."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT engines (needs tensorrt and a CUDA GPU)."),
    precision: str = typer.Option("fp32", help="TensorRT engine precision: fp32 (TF32 off) | fp16 (strongly typed fp16 graph)."),
    min_batch: int = typer.Option(1, help="TensorRT profile: smallest batch."),
    opt_batch: int = typer.Option(64, help="TensorRT profile: batch to tune for."),
    max_batch: int = typer.Option(256, help="TensorRT profile: largest batch."),
    workspace_mb: int = typer.Option(4096, help="TensorRT builder workspace (MiB)."),
    skip_parity: bool = typer.Option(False, "--skip-parity", help="Skip the parity check (manifest stays verified: false)."),
    parity_real: int = typer.Option(256, help="Parity: real test images of the run's data set."),
    parity_random: int = typer.Option(64, help="Parity: uniform random images."),
    triton: Path = typer.Option(None, "--triton", help="Also write a Triton Inference Server model repository here."),
    triton_name: str = typer.Option("atld", help="Triton model name (the engine, if any, is served as NAME_trt)."),
    triton_graph: str = typer.Option("pipeline", help="Graph to serve: pipeline (IMT) | classifier."),
    triton_max_batch: int = typer.Option(64, help="Triton max_batch_size."),
    triton_kind: str = typer.Option("KIND_GPU", help="Triton instance kind: KIND_GPU | KIND_CPU."),
    triton_instances: int = typer.Option(1, help="Triton model instances."),
) -> None:
    """Export a run: classifier/discriminator/IMT pipeline ONNX graphs, manifest, parity report (and engines)."""
    import time

    out = options.either(output, out, "--output", "--out")
    assert out is not None
    imt = options.IMT_MODES[options.imt_mode(imt)]

    from ..export.exporter import ExportOptions, export_run
    from ..export.triton import TritonOptions, write_triton_repo

    triton_opts = TritonOptions(
        name=triton_name, graph=triton_graph, max_batch_size=triton_max_batch, kind=triton_kind,
        instances=triton_instances, preferred_batch_sizes=tuple(b for b in (8, 32, 64) if b <= triton_max_batch),
    )
    opts = ExportOptions(
        imt_mode=imt, eps=eps, opset=opset, uint8_input=uint8_input, emit_transformed=emit_transformed, fp16=fp16,
        trt=trt, precision=precision, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
        workspace_mb=workspace_mb, skip_parity=skip_parity, parity_real=parity_real, parity_random=parity_random,
    )
    t0 = time.perf_counter()
    if triton is not None and triton.exists() and not triton.is_dir():
        from ..errors import ConfigError

        raise ConfigError(f"--triton {triton} exists and is not a directory; give a model repository folder")
    manifest = export_run(run, out, options=opts, echo=typer.echo)
    sizes = ", ".join(f"{g.file} {(out / g.file).stat().st_size / 1e6:.1f} MB" for g in manifest.graphs.values())
    typer.echo(f"exported {run} -> {out} in {time.perf_counter() - t0:.0f} s ({sizes}); verified: {manifest.verified}")
    if triton is not None:
        for model_dir in write_triton_repo(out, triton, triton_opts):
            typer.echo(f"triton model: {model_dir}")


@app.command()
def verify(
    art: Path = typer.Argument(..., help="Artifact directory written by `atld-deploy export`."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | tensorrt | all (all: every backend available here)."),
    parity_real: int = typer.Option(256, help="Real test images of the run's data set."),
    parity_random: int = typer.Option(64, help="Uniform random images."),
    record: bool = typer.Option(False, "--record", help="Write the result into the artifact (parity.json and the "
                                "manifest's verified flag); that removes a signature, so sign it again."),
    engines: Optional[str] = typer.Option(None, "--engines", help="Also run every graph on these inference engines "
                                          "and hold them to ONNX Runtime within the fp32 bars: any of onnxruntime, "
                                          "openvino, opencv, reference (those not installed are reported as skipped)."),
) -> None:
    """Re-check an artifact directory: file hashes, then parity of every graph/engine against PyTorch.
    Read-only unless --record."""
    from ..errors import ParityError
    from ..export.verify import verify_artifacts

    report = verify_artifacts(art, backends=[backend], n_real=parity_real, n_random=parity_random, record=record)
    typer.echo(report.table())
    if engines is not None:
        from ..export.engines import check_artifact_engines, format_engine_table

        results = check_artifact_engines(art, engines)
        typer.echo(format_engine_table(results))
        bad = [f"{g} on {r.engine}" for g, rows in results.items() for r in rows if not r.skipped and not r.passed]
        if bad:
            raise ParityError(f"{art}: these engines disagree with ONNX Runtime beyond the fp32 bars: {', '.join(bad)}")
    where = f"details in {art / 'parity.json'}; manifest marked verified: false" if record else "nothing was written"
    if not report.passed:
        raise ParityError(f"parity failed for {art} ({where})")
    typer.echo(f"{art}: verified" + ("" if record else " (read-only check; --record stores it in the artifact)"))


@app.command()
def sign(
    art: Path = typer.Argument(..., help="Artifact directory written by `atld-deploy export`."),
    key: Path = typer.Option(..., "--key", help="EC private key (PEM) to sign with."),
    password: Optional[str] = typer.Option(None, "--password", envvar="ATLD_DEPLOY_KEY_PASSWORD",
                                           help="The private key's password, if it has one."),
) -> None:
    """Sign every file of an artifact (OpenSSF model-signing; needs the `sign` extra): writes ART/model.sig."""
    from ..signing import sign_artifact

    sig = sign_artifact(art, key, password)
    typer.echo(f"signed {art} -> {sig}; loading commands check it with --public-key KEY.pub or $ATLD_DEPLOY_TRUST_KEY")


@app.command()
def schema(
    name: str = typer.Argument(..., help="manifest (an artifact's manifest.json) | run-config (a run's config.json)."),
) -> None:
    """Print the published JSON Schema that manifests or run configs are validated against (docs/schemas/)."""
    import json

    from ..errors import ConfigError
    from ..schema import SCHEMAS

    if name not in SCHEMAS:
        raise ConfigError(f"unknown schema {name!r}; choose one of {', '.join(SCHEMAS)}")
    typer.echo(json.dumps(SCHEMAS[name], indent=2))

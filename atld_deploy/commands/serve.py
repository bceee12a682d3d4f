"""`atld-deploy serve ART`: the runtime's Classifier on a Triton Inference Server (PyTriton), until SIGTERM/Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_app import app
from . import options
from .infer import ALLOW_UNVERIFIED_HELP, PUBLIC_KEY_HELP


@app.command()
def serve(
    art: Path = typer.Argument(..., help="Artifact directory written by `atld-deploy export`."),
    host: str = typer.Option("127.0.0.1", help="Address the HTTP, gRPC and metrics endpoints listen on "
                             "(0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(8001, help="gRPC (KServe v2) port."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (GET /metrics)."),
    name: str = typer.Option("atld", help="Model name: NAME takes float32 NCHW `images` in [0,1], NAME_uint8 "
                             "takes uint8 NHWC `images_uint8`."),
    max_batch: Optional[int] = typer.Option(None, show_default=False, help="Largest batch the dynamic batcher "
                                            "forms and a request may send (default: the artifact's max batch: the "
                                            "engine's profile max, else 256)."),
    max_queue_delay_us: int = typer.Option(500, help="How long the dynamic batcher waits to fill a batch (µs)."),
    backend: str = typer.Option("auto", help="auto | tensorrt | onnxruntime | torch"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    imt: str = typer.Option("auto", help="auto (the mode the artifact's card supports; without a card the pipeline "
                            "as exported) | static (the classifier graph, no IMT step) | imt | imt-plus (must be the "
                            "mode the pipeline was exported with)."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help=ALLOW_UNVERIFIED_HELP),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help=PUBLIC_KEY_HELP),
) -> None:
    """Serve ART over HTTP and gRPC with dynamic batching (docs/SERVING.md lists the inputs and outputs)."""
    from ..runtime import Classifier
    from ..runtime.serve import Server, ServeOptions, check_ports_free, require_pytriton

    mode = options.imt_mode(imt, allow=("auto", "static", "imt", "imt-plus"))
    opts = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, name=name,
                        max_batch=max_batch, max_queue_delay_us=max_queue_delay_us)
    # everything that needs no model first: a missing PyTriton or a taken port costs nothing
    require_pytriton()
    check_ports_free(opts)
    clf = Classifier.load(art, backend=backend, device=device, imt=mode, allow_unverified=allow_unverified,
                          public_key=public_key)
    try:
        server = Server(clf, opts)
        server.start()
        urls = server.urls()
        typer.echo(f"serve: {clf.runner.describe()} running {clf.graph!r} of {art} ({clf.describe_mode()}) as "
                   f"models {' and '.join(server.models)} (max batch {server.max_batch}); HTTP {urls['http']}, "
                   f"gRPC {urls['grpc']}, metrics {urls['metrics']}; SIGTERM or Ctrl-C stops it", err=True)
        try:
            server.wait()
        finally:
            server.stop()
    finally:
        clf.close()
    typer.echo("serve: stopped", err=True)

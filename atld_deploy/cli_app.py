"""The typer application object shared by every command module (atld_deploy/commands/*)."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="atld-deploy",
    help="Train, evaluate, export (ONNX/TensorRT) and serve ATLD adversarially robust classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STATE = {"verbose": False}


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and full tracebacks.")) -> None:
    STATE["verbose"] = verbose
    # our own loggers at INFO (DEBUG with -v); libraries (onnxscript, onnx_ir, ...) only warn
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("atld_deploy").setLevel(logging.DEBUG if verbose else logging.INFO)

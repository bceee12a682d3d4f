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


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"atld-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and full tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    STATE["verbose"] = verbose
    # our own loggers at INFO (DEBUG with -v); libraries (onnxscript, onnx_ir, ...) only warn
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("atld_deploy").setLevel(logging.DEBUG if verbose else logging.INFO)

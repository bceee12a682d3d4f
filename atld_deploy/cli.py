"""Console entry point: `atld-deploy COMMAND ...`. User errors print one line and exit non-zero."""

from __future__ import annotations

import sys

from .cli_app import STATE, app
from .errors import AtldError

# Each module registers its commands on `app`; they import heavy libraries only inside the commands.
from .commands import train as _train  # noqa: F401,E402

for _name in ("evaluate", "export", "infer", "scale", "demo"):
    try:
        __import__(f"{__package__}.commands.{_name}")
    except ModuleNotFoundError as _e:  # a stage not built yet in this checkout
        if _e.name != f"{__package__}.commands.{_name}":
            raise


def main(argv: list[str] | None = None) -> int:
    try:
        rc = app(args=argv, standalone_mode=False)  # typer.Exit(n) comes back as a return value here
    except AtldError as e:
        if STATE["verbose"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:  # typer's explicit exits (typer.Exit)
        return int(e.code or 0)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Exit):
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return rc if isinstance(rc, int) else 0


def entry() -> None:
    sys.exit(main())

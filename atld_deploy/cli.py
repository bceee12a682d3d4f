"""Console entry point: `atld-deploy COMMAND ...`.

Three kinds of failure, three kinds of output: a usage error (unknown option or command, missing argument, a
value of the wrong type) gets typer's usage message and exit 2; a user error (`AtldError`) one line and its
exit code; anything else is a bug in atld-deploy: one line naming where its traceback was written, exit 1.
`--verbose` prints the traceback instead and keeps the exit code.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import __version__
from .cli_app import STATE, app
from .errors import AtldError

# Each module registers its commands on `app`; they import heavy libraries only inside the commands.
from .commands import train as _train  # noqa: F401,E402

for _name in ("evaluate", "export", "infer", "serve", "scale", "demo", "card"):
    try:
        __import__(f"{__package__}.commands.{_name}")
    except ModuleNotFoundError as _e:  # a stage not built yet in this checkout
        if _e.name != f"{__package__}.commands.{_name}":
            raise

PROG = "atld-deploy"
EXIT_INTERNAL = 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: the process's arguments) and return its exit code.

    Args:
        argv: the arguments after the program name.

    Returns:
        0 on success, 2 for usage and user errors (or the `AtldError`'s own code), 1 for an internal error.
    """
    STATE["verbose"] = False  # set again by the root callback; a parse error stops before it runs
    try:
        # standalone mode: typer itself prints usage errors (exit 2) and turns typer.Exit into SystemExit
        app(args=argv, prog_name=PROG)
    except SystemExit as e:
        return _system_exit_code(e)
    except AtldError as e:
        if STATE["verbose"]:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug in atld-deploy or a library, not something the user can fix
        return report_internal_error(e, sys.argv[1:] if argv is None else argv)
    return 0


def report_internal_error(error: BaseException, argv: list[str]) -> int:
    """Print one line about an unexpected exception, its traceback going to a file (or stderr with -v).

    Args:
        error: the exception being handled (its traceback is the one written).
        argv: the command line that raised it, recorded beside the traceback.

    Returns:
        The exit code for an internal error.
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    first_line = (str(error).strip().splitlines() or [""])[0]
    summary = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
    if STATE["verbose"]:
        print(text, end="", file=sys.stderr)
        print(f"error: internal error in atld-deploy ({summary}); please report it with the traceback above",
              file=sys.stderr)
        return EXIT_INTERNAL
    try:
        where = str(_write_traceback(text, argv))
    except OSError as e:
        where = f"<not written: {e}>"
    print(f"error: internal error in atld-deploy ({summary}); the full traceback is in {where}: please report "
          f"it, or rerun with `{PROG} --verbose ...` to see it here", file=sys.stderr)
    return EXIT_INTERNAL


def _write_traceback(text: str, argv: list[str]) -> Path:
    """Write a crash report into the temp directory under a new name (mode from the umask, like open())."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"{PROG}-traceback-{stamp}-{os.getpid()}.txt"
    with open(path, "x", encoding="utf-8") as f:  # "x": never overwrite a file someone else owns
        f.write(f"{PROG} {__version__}, Python {sys.version.split()[0]}\nargv: {argv!r}\n\n{text}")
    return path


def _system_exit_code(e: SystemExit) -> int:
    """SystemExit's code as a process would see it: None is 0, a message is printed and gives 1."""
    if e.code is None or isinstance(e.code, int):
        return int(e.code or 0)
    print(e.code, file=sys.stderr)
    return 1


def entry() -> None:
    """The `atld-deploy` console script."""
    sys.exit(main())

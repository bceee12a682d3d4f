"""docs/CLI.md, generated from the CLI itself: `python -m atld_deploy.cli_reference > docs/CLI.md`.

A test regenerates it and fails when the committed file differs, so the reference always matches `--help`.
Hidden options (old spellings kept for scripts) are listed separately, as aliases.
"""

from __future__ import annotations

import sys
from typing import Any

HEADER = """# Command reference

Generated from the CLI by `python -m atld_deploy.cli_reference > docs/CLI.md`; a test keeps it equal to `--help`.

## Spellings

One spelling per concept in every command:

| concept | spelling |
| --- | --- |
| output path (run, artifact, predictions, report) | `--output` / `-o` |
| artifact directory | `ART`, positional, where the command acts on it (`verify`, `bench`, `sign`); `--artifact` / `-a` in `infer` |
| backend | `--backend` (`auto`, `tensorrt`, `onnxruntime`, `torch`) |
| device | `--device` (`auto`: a CUDA GPU if torch sees one, else the CPU) |
| IMT mode | `static`, `imt`, `imt-plus` |

Older spellings still work for one release and are not shown in `--help`: `--out` (now `--output`), `infer
--artifacts` (now `--artifact`), `bench --backends` (now `--backend`), `--imt plus|plain|off` (now
`imt-plus|imt|static`), eval's `imt+` (now `imt-plus`), `infer --no-imt` (now `--imt static`).

Exit codes: 0 success; 2 a usage error or a refused input (one line on stderr says what and what to do);
3 `infer`/`merge` finished but some files could not be read or are missing; 1 an internal error (one line names
the file holding the traceback); 130 interrupted.
"""


def _default(p: Any) -> str:
    if p.required:
        return "required"
    d = p.default
    if callable(d) or d is None or d == "" or (isinstance(d, (list, tuple)) and not d):
        return ""
    if isinstance(d, bool):
        return "on" if d else "off"
    return f"`{d}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole reference as markdown."""
    import typer

    from .cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("atld-deploy", [], resilient_parsing=True)
    out = [HEADER]
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        usage = " ".join([f"atld-deploy {name}"] + [p.name.upper() for p in args] + ["[OPTIONS]"])
        out += [f"## `{name}`", "", _cell(cmd.help or ""), "", f"    {usage}", ""]
        shown = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
        if shown:
            out += ["| option | default | meaning |", "| --- | --- | --- |"]
            for p in shown:
                flags = ", ".join(f"`{o}`" for o in list(p.opts) + list(p.secondary_opts)) if p.param_type_name == "option" \
                    else f"`{p.name.upper()}`"
                out.append(f"| {flags} | {_default(p)} | {_cell(getattr(p, 'help', '') or '')} |")
            out.append("")
        aliases = [p for p in cmd.params if getattr(p, "hidden", False)]
        if aliases:
            out += ["Old spellings, still accepted: " + ", ".join(f"`{o}`" for p in aliases for o in p.opts) + ".", ""]
        if cmd.epilog:
            out += ["```", cmd.epilog.replace("\n\n", "\n").strip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""One spelling per concept across every command (docs/CLI.md lists them), and the old spellings as hidden
aliases that keep users' scripts working.

    output path        --output / -o          (old: --out)
    artifact directory ART (positional) where the command acts on it; --artifact / -a in `infer` (old: --artifacts)
    backend            --backend              (old: bench --backends)
    device             --device auto|cpu|cuda (default auto: a CUDA GPU if torch sees one, else the CPU)
    IMT mode           static | imt | imt-plus (old: off | plain | plus, and eval's imt+)

Light: imported by `--help`, so nothing heavy here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from ..errors import ConfigError

T = TypeVar("T")

# user-facing IMT mode -> the IMT transform's own mode name (atld_deploy.imt.IMTConfig)
IMT_MODES = {"static": "off", "imt": "plain", "imt-plus": "plus"}
IMT_ALIASES = {"off": "static", "plain": "imt", "plus": "imt-plus", "imt+": "imt-plus"}
DEVICES = ("auto", "cpu", "cuda")


def hidden(*decls: str) -> Any:
    """A hidden option: an old spelling that still works but is not shown in --help."""
    return typer.Option(None, *decls, hidden=True)


def either(new: Optional[T], old: Optional[T], new_flag: str, old_flag: str, required: bool = True,
           default: Optional[T] = None) -> Optional[T]:
    """The value of an option given under its new or its old (hidden) spelling; both at once must agree.
    `default`: the new spelling's default, which the old spelling overrides."""
    if default is not None and new == default and old is not None:
        return old
    if new is not None and old is not None and new != old:
        raise ConfigError(f"{new_flag} and {old_flag} are the same option; give it once")
    value = new if new is not None else old
    if value is None and required:
        raise ConfigError(f"missing option {new_flag}")
    return value


def imt_mode(text: str, *, allow: tuple[str, ...] = tuple(IMT_MODES)) -> str:
    """A user's IMT mode (new or old spelling) -> static | imt | imt-plus (or `auto` where allowed)."""
    name = IMT_ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in allow:
        raise ConfigError(f"IMT mode must be one of {', '.join(allow)}, got {text!r}")
    return name


def imt_modes(text: str) -> list[str]:
    """A comma-separated list of IMT modes (eval's --models), each as `imt_mode`."""
    return [imt_mode(t) for t in text.split(",") if t.strip()]


def device(text: str) -> str:
    """`auto` -> `cuda` if torch sees a GPU, else `cpu`; `cpu`, `cuda` and `cuda:N` pass through."""
    t = text.strip().lower()
    if t not in DEVICES and not t.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    if t != "auto":
        return t
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def path_or_none(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None

"""What atld-deploy may replace: only directories that carry its own marker and hold nothing else.

`train --overwrite` and `export` replace a directory the user names. A directory is replaced only when
(1) its marker file is a regular file that parses to the tool's own marker (a run's `config.json` with
`"kind": "atld-deploy/run"`, an artifact's `manifest.json` with `"format": "atld-deploy/artifact"`), and
(2) every entry in it is one the tool writes there. Anything else is refused, naming what was found, before
any work starts; nothing is moved or deleted. Replacing is then move-aside, write, delete the old one only
after the new one is complete (`Replacement`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import AtldError
from .io import MAX_JSON_BYTES as MARKER_MAX_BYTES  # a marker is small JSON; a larger file is not ours
# temporary files the tool's atomic writes leave only when killed mid-write: `.NAME.<random>.tmp`
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"


def read_marker(path: Path) -> Any | None:
    """The parsed JSON of `path` if it is a small regular file holding valid JSON, else None (never blocks)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MARKER_MAX_BYTES:
        return None
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(MARKER_MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return None


def _is_atomic_tmp(name: str, known: Iterable[str]) -> bool:
    return name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX) and any(name.startswith(f".{k}.") for k in known)


@dataclass(frozen=True)
class Owned:
    """How to recognise one kind of directory the tool writes.

    Args:
        what: "run" or "artifact" (for messages).
        marker: the marker file's name.
        is_marker: parsed marker JSON -> True if it is the tool's own.
        entries: parsed marker JSON -> {name: None for a file, or the names a sub-directory may hold} for every
            entry the tool may have written beside the marker.
        error: the AtldError subclass to raise.
        option: the command-line option that named the directory (for messages).
    """

    what: str
    marker: str
    is_marker: Callable[[Any], bool]
    entries: Callable[[Any], dict[str, frozenset[str] | None]]
    error: type[AtldError]
    option: str

    def check_replaceable(self, path: Path) -> bool:
        """True if `path` holds a complete directory of ours that may be replaced, False if it is absent or an
        empty directory (nothing to replace). Raises `error` naming what was found otherwise; touches nothing."""
        if os.path.islink(path):
            raise self.error(f"{path} is a symbolic link; atld-deploy replaces only real directories it wrote: "
                             f"give the target directory itself as {self.option}, or another path")
        if not path.exists():
            return False
        if not path.is_dir():
            raise self.error(f"{path} exists and is not a directory; choose another {self.option} or move it away")
        names = sorted(os.listdir(path))
        if not names:
            return False
        refuse = (f"{path} is not an atld-deploy {self.what} directory, so it is never replaced or deleted; "
                  f"choose another {self.option} or empty it yourself")
        marker = read_marker(path / self.marker)
        if marker is None or not self.is_marker(marker):
            found = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            why = f"it has no {self.marker} of an atld-deploy {self.what}" if marker is None or self.marker not in names \
                else f"its {self.marker} is not an atld-deploy {self.what}'s"
            raise self.error(f"{refuse} ({why}; found: {found})")
        allowed: dict[str, frozenset[str] | None] = {self.marker: None, **self.entries(marker)}
        foreign = _foreign(path, names, allowed)
        for name, children in allowed.items():
            sub = path / name
            if children is not None and name not in foreign and sub.is_dir():
                foreign += [f"{name}/{n}" for n in _foreign(sub, sorted(os.listdir(sub)), dict.fromkeys(children))]
        if foreign:
            shown = ", ".join(foreign[:6]) + (", ..." if len(foreign) > 6 else "")
            raise self.error(f"{path} holds an atld-deploy {self.what} but also files atld-deploy did not write there "
                             f"({shown}); it is never replaced while they are in it: move them out, or choose another "
                             f"{self.option}")
        return True


def _foreign(path: Path, names: list[str], allowed: dict[str, frozenset[str] | None]) -> list[str]:
    """The entries of `path` that are not in `allowed` (or not of the allowed kind, or are symlinks)."""
    out = []
    for name in names:
        p = path / name
        if p.is_symlink():
            out.append(name)
        elif name in allowed:
            if (p.is_dir() if allowed[name] is not None else p.is_file()):
                continue
            out.append(name)
        elif not (_is_atomic_tmp(name, allowed) and p.is_file()):
            out.append(name)
    return out


class Replacement:
    """Move-aside replacement of a checked directory: `begin()` renames the old one to a hidden sibling,
    `commit()` deletes it once the new one is complete, `rollback()` deletes the new one and puts the old one
    back exactly as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.aside = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
        self.active = False

    def begin(self) -> None:
        os.replace(self.path, self.aside)
        self.active = True

    def commit(self) -> None:
        if self.active:
            shutil.rmtree(self.aside)
            self.active = False

    def rollback(self) -> None:
        if self.active:
            if self.path.exists() or self.path.is_symlink():
                shutil.rmtree(self.path)
            os.replace(self.aside, self.path)
            self.active = False

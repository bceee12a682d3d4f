"""`tree(root)`: a snapshot of a directory tree, to show a refused command changed nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under `root` (and `root`'s parent listing) -> (kind, content hash + mode, or link target)."""
    out: dict[str, tuple[str, str]] = {"..": ("listing", ",".join(sorted(os.listdir(root.parent))))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(p.stat().st_mode))
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode))
    return out

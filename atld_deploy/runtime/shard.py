"""Sharded batch inference: `infer --shard i/n` classifies a deterministic 1/n of a folder's files.

A file belongs to shard `sha256(relative path) mod n`. The assignment depends only on the file's path
relative to IMAGES, not on the listing order or on which other files exist, so n processes on n machines
(one per GPU, or a cluster array job with i = the task index) cover the folder exactly once, and a file
added later lands in one shard only. `merge_predictions` joins the shards' outputs into one file with
every path once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import ConfigError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4 ... 3/4), got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = _SHARD.match(text)
        if m is None:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4; i counts from 0), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, relative_path: str) -> bool:
        """Whether the file at `relative_path` (POSIX form, relative to IMAGES) belongs to this shard."""
        if self.count == 1:
            return True
        digest = hashlib.sha256(relative_path.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

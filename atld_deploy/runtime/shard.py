"""Sharded batch inference: `infer --shard i/n` classifies a deterministic 1/n of a folder's files.

A file belongs to shard `sha256(relative path) mod n`. The assignment depends only on the file's path
relative to IMAGES, not on the listing order or on which other files exist, so n processes on n machines
(one per GPU, or a cluster array job with i = the task index) cover the folder exactly once, and a file
added later lands in one shard only. `merge_predictions` joins the shards' outputs into one file with
every path once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class MergeSummary:
    files: int
    classified: int
    unreadable: int
    missing: list[str]  # files under --images that no shard listed (empty when not checked)
    output: Path

    def line(self) -> str:
        text = f"merged {self.files} lines ({self.classified} classified, {self.unreadable} unreadable) -> {self.output}"
        if self.missing:
            text += (f"; {len(self.missing)} files under the folder are in no shard "
                     f"(first: {escape_text(self.missing[0])})")
        return text


def _walk_key(path: str) -> list[str]:
    return path.split("/")  # the order `infer` walks in: sorted by name within each directory, depth first


def merge_predictions(inputs: list[Path], output: Path, images_dir: Path | None = None) -> MergeSummary:
    """Join shard outputs (.jsonl/.csv, mixed allowed) into `output` (format by its extension), every path
    once, in `infer`'s walk order. With `images_dir`, also report files no shard covered.

    Raises:
        DataError: an input is missing, not a predictions file (a malformed line is named), ends with a partial
            line (resume that shard first), or two inputs list the same path.
        ConfigError: bad output extension, or `output` is one of the inputs.
    """
    from ..errors import DataError
    from .folder import walk_files
    from .outputs import Row, ends_with_partial_line, escape_text, iter_rows, open_writer, output_format

    output_format(output)
    if not inputs:
        raise ConfigError("merge needs at least one shard output")
    if any(p.resolve() == output.resolve() for p in inputs if p.exists()):
        raise ConfigError(f"--output {output} is also an input; write the merged file elsewhere")
    owner: dict[str, Path] = {}
    rows: dict[str, Row] = {}
    for path in inputs:
        if not path.is_file():
            raise DataError(f"shard output {path} does not exist")
        if ends_with_partial_line(path):
            raise DataError(f"{path} ends with a partial line (its shard was interrupted); finish that shard with "
                            f"`atld-deploy infer ... --shard i/n --resume` first")
        for row in iter_rows(path):
            p = row[0]
            if p in owner:
                raise DataError(f"{escape_text(p)} is listed in both {owner[p]} and {path}: were the shards run with "
                                f"different n, or one shard twice? Merge outputs of one `--shard i/n` set only")
            owner[p] = path
            rows[p] = row
    missing: list[str] = []
    if images_dir is not None:
        listed = {e.rel for e in walk_files(images_dir)}
        listed -= {p.resolve().relative_to(images_dir.resolve()).as_posix() for p in [output, *inputs]
                   if p.resolve().is_relative_to(images_dir.resolve())}  # prediction files inside the folder
        missing = sorted(listed - set(rows), key=_walk_key)
    ordered = [rows[p] for p in sorted(rows, key=_walk_key)]
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=output.suffix, dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:  # atomic: the merged file appears complete or not at all
        writer = open_writer(tmp, fresh=True, suspect=any(len(r) > 6 and r[6] is not None for r in ordered))
        writer.write_rows(ordered)
        writer.close()
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    unreadable = sum(1 for r in ordered if r[5] is not None)
    return MergeSummary(len(ordered), len(ordered) - unreadable, unreadable, missing, output)

"""Prediction files written by `infer`: JSON Lines or CSV (by extension), one line per input file.

    {"path": "a/b.png", "label": 3, "class": "3", "confidence": 0.98, "p_natural": 0.91}
    {"path": "broken.jpg", "error": "cannot decode image (...)"}

Lines are appended and flushed batch by batch, so a killed run leaves complete lines plus at most one partial
last line; `read_done` (used by `--resume`) drops that partial line and returns the paths already written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

CSV_FIELDS = ("path", "label", "class", "confidence", "p_natural", "error")
FORMATS = {".jsonl": "jsonl", ".csv": "csv"}


def output_format(path: Path) -> str:
    """`jsonl` or `csv` from the output file's extension.

    Raises:
        ConfigError: any other extension.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--output must end in .jsonl or .csv, got {path.name!r}")
    return fmt


# (path, label, class, confidence, p_natural, error): a prediction has error None, an error line only path+error
Row = tuple[str, Optional[int], Optional[str], Optional[float], Optional[float], Optional[str]]


class Writer(Protocol):
    def write_rows(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def _json_line(row: Row, quote: Callable[[str], str] = encode_basestring_ascii) -> str:
    """The same text `json.dumps` gives for the record dict (ASCII-escaped, so any filename round-trips).

    `encode_basestring_ascii` is the C routine `json.dumps` itself uses for strings, minus its per-call setup.
    """
    path, label, cls, conf, p, err = row
    if err is not None:
        return f'{{"path": {quote(path)}, "error": {quote(err)}}}\n'
    p_text = "null" if p is None else repr(p)
    return (f'{{"path": {quote(path)}, "label": {label}, "class": {quote(cls)}, '
            f'"confidence": {conf!r}, "p_natural": {p_text}}}\n')


class _LineWriter:
    """Appends rows as complete lines; each `write_rows` is one flushed write of whole lines."""

    def __init__(self, path: Path, fmt: str, fresh: bool) -> None:
        self.fmt = fmt
        self._f = open(path, "w" if fresh else "a", encoding="utf-8", errors="surrogateescape", newline="")
        if fmt == "csv" and (fresh or path.stat().st_size == 0):
            self._f.write(",".join(CSV_FIELDS) + "\n")
            self._f.flush()

    def _format(self, rows: Sequence[Row]) -> str:
        if self.fmt == "jsonl":
            return "".join(map(_json_line, rows))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)  # None is written as an empty field
        return buf.getvalue()

    def write_rows(self, rows: Sequence[Row]) -> None:
        self._f.write(self._format(rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def open_writer(path: Path, fresh: bool) -> Writer:
    """A writer appending to `path` (`fresh`: truncate first)."""
    return _LineWriter(path, output_format(path), fresh)


@dataclass
class Done:
    """What an existing output file already holds."""

    paths: set[str] = field(default_factory=set)
    classified: int = 0
    unreadable: int = 0
    dropped_partial: bool = False


def _truncate_partial(path: Path) -> bool:
    """Cut a trailing partial line (a run killed mid-write) off `path`; True if one was dropped."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb+") as f:
        # scan back from the end for the last newline, 64 KiB at a time
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        else:
            cut = 0
        if cut == size:
            return False
        f.truncate(cut)
        os.fsync(f.fileno())
    return True


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a complete predictions file (JSON Lines or CSV), as dicts with at least `path`.

    Raises:
        DataError: a line that is not a prediction record (the file is not ours).
    """
    fmt = output_format(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        if fmt == "jsonl":
            for n, line in enumerate(f, 1):
                row = _parse_json_line(path, n, line)
                if row is not None:
                    yield row
            return
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != CSV_FIELDS:
            raise DataError(f"{path} has columns {reader.fieldnames}, expected {list(CSV_FIELDS)}; "
                            f"it is not an atld-deploy predictions file: choose another --output")
        yield from reader


def ends_with_partial_line(path: Path) -> bool:
    """True if `path` does not end with a newline (a run killed mid-write)."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) != b"\n"


def read_done(path: Path) -> Done:
    """Paths already in the output file `path` (for --resume), after dropping a partial last line.

    Raises:
        DataError: a complete line that is not a prediction record (the file is not ours).
    """
    output_format(path)
    done = Done()
    if not path.exists():
        return done
    done.dropped_partial = _truncate_partial(path)
    if done.dropped_partial:
        log.warning("%s ended with a partial line (an interrupted run); dropped it", path)
    for row in iter_records(path):
        done.paths.add(row["path"])
        if row.get("error"):
            done.unreadable += 1
        else:
            done.classified += 1
    return done


def _parse_json_line(path: Path, n: int, line: str) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {n} is not JSON ({e}); it is not an atld-deploy predictions file: "
                        f"choose another --output") from e
    if not isinstance(row, dict) or "path" not in row:
        raise DataError(f"{path} line {n} has no 'path'; it is not an atld-deploy predictions file")
    return row

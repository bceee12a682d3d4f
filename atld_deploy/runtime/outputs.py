r"""Prediction files written by `infer`: JSON Lines or CSV (by extension), one line per input file.

    {"path": "a/b.png", "label": 3, "class": "3", "confidence": 0.98, "p_natural": 0.91}
    {"path": "c.png", "label": 1, "class": "1", "confidence": 0.52, "p_natural": 0.08, "suspect": true}
    {"path": "broken.jpg", "error": "cannot decode image (...)"}

`suspect` (p_natural below the artifact's measured detector threshold) is written only by an artifact that has
one (`atld-deploy card`); CSV then has a `suspect` column (true/false) after `error`.

Lines are appended and flushed batch by batch, so a killed run leaves complete lines plus at most one partial
last line; `read_done` (used by `--resume`) drops that partial line and returns the paths already written.

Text fields (path, class, error) are spelt the same way in both formats, so that every file name -- including
one with a line break or bytes that are not UTF-8 -- is one line of valid UTF-8 and reads back to the same
name (`escape_text` / `unescape_text`):

    a backslash                                         ->  \\
    a control character U+0000-U+001F or U+007F         ->  \xHH    (its code: 00-1F, 7F)
    a byte of a name that is not UTF-8                  ->  \xHH    (the byte: 80-FF; Python's surrogateescape)
    a control character U+0080-U+009F, U+2028, U+2029,  ->  \uHHHH  (its code)
      or any other lone surrogate

CSV output quotes every field, and a cell that a spreadsheet would run as a formula -- one starting with
`=`, `+`, `-`, `@`, tab or carriage return -- gets a single quote in front, as OWASP's CSV-injection advice
says; so does a cell already starting with a single quote, so that reading the file back (which drops one
leading quote) is exact. JSON Lines needs no formula guard; its strings are ASCII-escaped JSON.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

CSV_FIELDS = ("path", "label", "class", "confidence", "p_natural", "error")
CSV_FIELDS_SUSPECT = CSV_FIELDS + ("suspect",)  # an artifact with a detector threshold
FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: cells a spreadsheet would evaluate
_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # see the docstring
_ESCAPED = re.compile(r"\\(?:\\|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")
NOT_OURS = "it is not an atld-deploy predictions file"


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c == 0x5C:
        return "\\\\"
    if 0xDC80 <= c <= 0xDCFF:  # surrogateescape: the undecodable byte c - 0xDC00
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x80 else f"\\u{c:04x}"


def _unescape_char(m: re.Match[str]) -> str:
    hex2, hex4 = m.group(1), m.group(2)
    if hex2 is not None:
        c = int(hex2, 16)
        return chr(c) if c < 0x80 else chr(0xDC00 + c)
    return chr(int(hex4, 16)) if hex4 is not None else "\\"


def escape_text(text: str) -> str:
    """`text` as the predictions files spell it (see the module docstring): printable, valid Unicode, one line."""
    return _NEEDS_ESCAPE.sub(_escape_char, text) if _NEEDS_ESCAPE.search(text) else text


def unescape_text(text: str) -> str:
    """The inverse of `escape_text`: a path field back to the file name it came from."""
    return _ESCAPED.sub(_unescape_char, text) if "\\" in text else text


def _csv_cell(value: object) -> object:
    """A CSV cell: text escaped and guarded against formula injection; numbers and None as they are."""
    if not isinstance(value, str):
        return value
    text = escape_text(value)
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def _csv_text(cell: str) -> str:
    """A CSV cell read back: the formula guard's quote dropped, the escapes undone."""
    return unescape_text(cell[1:] if cell.startswith("'") else cell)


def output_format(path: Path) -> str:
    """`jsonl` or `csv` from the output file's extension.

    Raises:
        ConfigError: any other extension.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--output must end in .jsonl or .csv, got {path.name!r}")
    return fmt


# (path, label, class, confidence, p_natural, error[, suspect]): a prediction has error None, an error line only
# path+error; suspect is None when the artifact has no threshold (a 6-tuple reads as suspect None)
Row = tuple[Any, ...]


def row_suspect(row: Row) -> Optional[bool]:
    """The row's suspect flag (None when absent)."""
    return row[6] if len(row) > 6 else None


class Writer(Protocol):
    def write_rows(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def _quote_json(text: str, quote: Callable[[str], str] = encode_basestring_ascii) -> str:
    return quote(escape_text(text))


def _json_line(row: Row, quote: Callable[[str], str] = _quote_json) -> str:
    """The text `json.dumps` gives for the record dict with its strings escaped by `escape_text`.

    `encode_basestring_ascii` is the C routine `json.dumps` itself uses for strings, minus its per-call setup.
    """
    path, label, cls, conf, p, err = row[:6]
    if err is not None:
        return f'{{"path": {quote(path)}, "error": {quote(err)}}}\n'
    p_text = "null" if p is None else repr(p)
    flag = row_suspect(row)
    tail = "" if flag is None else f', "suspect": {"true" if flag else "false"}'
    return (f'{{"path": {quote(path)}, "label": {label}, "class": {quote(cls)}, '
            f'"confidence": {conf!r}, "p_natural": {p_text}{tail}}}\n')


class _LineWriter:
    """Appends rows as complete lines; each `write_rows` is one flushed write of whole lines."""

    def __init__(self, path: Path, fmt: str, fresh: bool, suspect: bool = False) -> None:
        self.fmt = fmt
        self.fields = CSV_FIELDS_SUSPECT if suspect else CSV_FIELDS
        if fmt == "csv" and not fresh and path.exists() and path.stat().st_size > 0:
            _check_resumable_header(path, self.fields)
        self._f = open(path, "w" if fresh else "a", encoding="utf-8", newline="")  # every field is escaped
        if fmt == "csv" and (fresh or path.stat().st_size == 0):
            self._f.write(self._format([self.fields], header=True))
            self._f.flush()

    def _format(self, rows: Sequence[Sequence[object]], header: bool = False) -> str:
        if self.fmt == "jsonl":
            return "".join(map(_json_line, rows))  # type: ignore[arg-type]
        buf = io.StringIO()
        width = len(self.fields)
        if not header:  # a 6-tuple row has no flag; the suspect column holds true/false
            rows = [tuple(r[:6]) + (() if width == 6 else (_flag_cell(row_suspect(r)),)) for r in rows]
        # None is written as an empty (quoted) field
        csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows([map(_csv_cell, r) for r in rows])
        return buf.getvalue()

    def write_rows(self, rows: Sequence[Row]) -> None:
        self._f.write(self._format(rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _flag_cell(flag: Optional[bool]) -> Optional[str]:
    return None if flag is None else ("true" if flag else "false")


def _check_resumable_header(path: Path, fields: Sequence[str]) -> None:
    """Refuse to append rows of one column set to a CSV file written with the other."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        header = next(csv.reader(f), None)
    if header is not None and tuple(header) != tuple(fields):
        raise ConfigError(f"{path} has the columns {','.join(header)} but this artifact writes {','.join(fields)} "
                          f"(`suspect` comes with a detector threshold): --resume would mix the two layouts; "
                          f"use --overwrite or another --output")


def open_writer(path: Path, fresh: bool, suspect: bool = False) -> Writer:
    """A writer appending to `path` (`fresh`: truncate first); `suspect`: CSV gets the suspect column."""
    return _LineWriter(path, output_format(path), fresh, suspect)


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


def iter_rows(path: Path) -> Iterator[Row]:
    """The rows of a complete predictions file (JSON Lines or CSV), text fields read back to what was written.

    Raises:
        DataError: a line that is not a prediction record (the file is not ours, or was edited), naming the
            line and what is wrong with it.
    """
    fmt = output_format(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:  # older files held raw bytes
        if fmt == "jsonl":
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield _json_row(path, n, line)
            return
        reader = csv.reader(f)
        header = next(reader, None)
        if header is not None and tuple(header) not in (CSV_FIELDS, CSV_FIELDS_SUSPECT):
            raise DataError(f"{path} has columns {header}, expected {list(CSV_FIELDS)} (+ suspect); {NOT_OURS}: "
                            f"choose another --output")
        fields = tuple(header) if header is not None else CSV_FIELDS
        for cells in reader:
            if cells:
                yield _csv_row(path, reader.line_num, cells, fields)


def _bad_row(path: Path, n: int, what: str) -> DataError:
    return DataError(f"{path} line {n}: {what}; {NOT_OURS} (or it was edited): fix or remove that line")


def _csv_row(path: Path, n: int, cells: list[str], fields: Sequence[str] = CSV_FIELDS) -> Row:
    if len(cells) != len(fields):
        raise _bad_row(path, n, f"{len(cells)} fields, expected {len(fields)} ({', '.join(fields)})")
    rec: dict[str, Any] = {k: (_csv_text(v) if v != "" else None) for k, v in zip(fields, cells)}
    if rec.get("suspect") is not None:
        if rec["suspect"] not in ("true", "false"):
            raise _bad_row(path, n, f"suspect {rec['suspect']!r} is not true or false")
        rec["suspect"] = rec["suspect"] == "true"
    for key, kind, what in (("label", int, "an integer"), ("confidence", float, "a number"),
                            ("p_natural", float, "a number")):
        if rec[key] is not None:
            try:
                rec[key] = kind(rec[key])
            except ValueError:
                raise _bad_row(path, n, f"{key} {rec[key]!r} is not {what}") from None
    return _checked_row(path, n, rec)


def _json_row(path: Path, n: int, line: str) -> Row:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise _bad_row(path, n, f"not JSON ({e})") from e
    if not isinstance(rec, dict):
        raise _bad_row(path, n, f"a JSON {type(rec).__name__}, expected an object")
    text = {k: unescape_text(v) for k, v in rec.items() if k in ("path", "class", "error") and isinstance(v, str)}
    return _checked_row(path, n, {**rec, **text})


def _checked_row(path: Path, n: int, rec: dict[str, Any]) -> Row:
    """The record as a Row, once every field has the type a predictions file gives it."""
    p, err = rec.get("path"), rec.get("error")
    if not isinstance(p, str) or not p:
        raise _bad_row(path, n, f"path {p!r} is not a file name")
    if err is not None:
        if not isinstance(err, str):
            raise _bad_row(path, n, f"error {err!r} is not text")
        return (p, None, None, None, None, err, None)
    label, cls, conf, p_nat = (rec.get(k) for k in ("label", "class", "confidence", "p_natural"))
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise _bad_row(path, n, f"label {label!r} is not a class index")
    if not isinstance(cls, str):
        raise _bad_row(path, n, f"class {cls!r} is not a class name")
    for key, value in (("confidence", conf), ("p_natural", p_nat)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1) and not (
                key == "p_natural" and value is None):
            raise _bad_row(path, n, f"{key} {value!r} is not a probability")
    flag = rec.get("suspect")
    if flag is not None and not isinstance(flag, bool):
        raise _bad_row(path, n, f"suspect {flag!r} is not true or false")
    return (p, label, cls, float(conf), None if p_nat is None else float(p_nat), None, flag)


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
    for row in iter_rows(path):
        done.paths.add(row[0])
        if row[5] is not None:
            done.unreadable += 1
        else:
            done.classified += 1
    return done

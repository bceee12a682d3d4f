"""Class and tensor names that end up in text other programs parse: Triton reads `labels.txt` one name
per line and `config.pbtxt` as quoted strings. A name must therefore be one line of printable text with
no quotes or backslashes; anything else is refused where the name enters (train, export), never escaped.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

from .errors import AtldError

NAME_RULE = "names must be one line of printable text without quotes or backslashes"
_LINE_BREAKING = {"Cc", "Zl", "Zp"}  # control characters, U+2028 and U+2029 (line breaks to many readers)


def name_problem(name: object) -> str | None:
    """What makes `name` unusable in labels.txt or config.pbtxt, or None when it is fine."""
    if not isinstance(name, str):
        return f"no text (it is a {type(name).__name__})"
    if not name:
        return "nothing (it is empty)"
    for ch in name:
        if ch in "\"'":
            return "a quote"
        if ch == "\\":
            return "a backslash"
        if unicodedata.category(ch) in _LINE_BREAKING:
            return f"the control character U+{ord(ch):04X}"
    return None


def check_names(names: Iterable[object], what: str, where: object, error: type[AtldError], hint: str) -> None:
    """Raise `error` naming the first unusable name: "<what> 'x\\ny' in <where> contains ...; <hint>"."""
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise error(f"{what} {name!r} in {where} contains {problem}; {NAME_RULE}: {hint}")

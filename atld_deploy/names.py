"""Class and tensor names that end up in text other programs parse: Triton reads `labels.txt` one name
per line and `config.pbtxt` as quoted strings. A name must therefore be one line of printable text with
no quotes or backslashes; anything else is refused where the name enters (train, export), never escaped.
"""

from __future__ import annotations

import re
from typing import Iterable

from .errors import AtldError

NAME_RULE = "names must be one line of printable text without quotes or backslashes"
# control characters (C0, DEL, C1), the Unicode line and paragraph separators, quotes and the backslash
_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u2028\u2029" + "\"'" + r"\\"
# the same rule as a regular expression for schemas; a lookahead, because Python's `$` also matches before a
# final newline, so "^[^...]+$" would accept "name\n"
NAME_PATTERN = f"^(?![\\s\\S]*[{_FORBIDDEN}])[\\s\\S]+"
_FIRST_BAD = re.compile(f"[{_FORBIDDEN}]")


def name_problem(name: object) -> str | None:
    """What makes `name` unusable in labels.txt or config.pbtxt, or None when it is fine."""
    if not isinstance(name, str):
        return f"no text (it is a {type(name).__name__})"
    if not name:
        return "nothing (it is empty)"
    bad = _FIRST_BAD.search(name)
    if bad is None:
        return None
    ch = bad.group()
    return "a quote" if ch in "\"'" else "a backslash" if ch == "\\" else f"the control or line-break character U+{ord(ch):04X}"


def check_names(names: Iterable[object], what: str, where: object, error: type[AtldError], hint: str) -> None:
    """Raise `error` naming the first unusable name: "<what> 'x\\ny' in <where> contains ...; <hint>"."""
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise error(f"{what} {name!r} in {where} contains {problem}; {NAME_RULE}: {hint}")

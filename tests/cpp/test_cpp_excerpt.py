"""Code excerpts in the docs equal the lines of the files they quote.

An excerpt is a marker line `<!-- excerpt: PATH FIRST-LAST -->` (PATH from the repository root, 1-based
inclusive line numbers) followed by a fenced code block; the block must equal those lines with their
common indentation removed.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["docs/SERVING.md", "README.md"]  # every markdown file that quotes code
MARKER = re.compile(r"<!-- excerpt: (\S+) (\d+)-(\d+) -->\n```[a-z+]*\n(.*?)```\n", re.S)


def excerpt_mismatches(markdown: str, root: Path) -> list[str]:
    """One line per excerpt that differs from the lines it names (or names lines that do not exist)."""
    problems = []
    for path, first, last, block in MARKER.findall(markdown):
        lines = (root / path).read_text().splitlines(keepends=True)
        a, b = int(first), int(last)
        if not 1 <= a <= b <= len(lines):
            problems.append(f"{path} {a}-{b}: the file has {len(lines)} lines")
        elif textwrap.dedent("".join(lines[a - 1:b])) != block:
            problems.append(f"{path} {a}-{b}: the excerpt differs from the file")
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_excerpts_equal_the_code_they_quote(doc: str) -> None:
    text = (ROOT / doc).read_text()
    assert len(MARKER.findall(text)) >= 1, f"{doc} has no excerpt marker"
    assert excerpt_mismatches(text, ROOT) == []


def test_a_stale_excerpt_is_caught() -> None:
    text = (ROOT / "docs/SERVING.md").read_text()
    [(path, first, last, block)] = MARKER.findall(text)
    edited = text.replace(block, block.replace("request.infer();", "request.start_async();"), 1)
    assert edited != text
    assert excerpt_mismatches(edited, ROOT) == [f"{path} {first}-{last}: the excerpt differs from the file"]
    shifted = text.replace(f"{path} {first}-{last}", f"{path} {int(first) + 1}-{int(last) + 1}")
    assert excerpt_mismatches(shifted, ROOT) == [f"{path} {int(first) + 1}-{int(last) + 1}: the excerpt differs "
                                                 "from the file"]
    assert excerpt_mismatches(text.replace(f"{path} {first}-{last}", f"{path} 90-900"), ROOT) == [
        f"{path} 90-900: the file has {len((ROOT / path).read_text().splitlines())} lines"]

"""Measurement files: every figure the docs quote comes from a JSON file under docs/measurements/ that the
command which measured it wrote, with the command, commit, date, machine (CPU model, cores, load average) and
library versions beside the figures. tests/test_docs.py checks each quoted figure against its file."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import write_json_atomic

VERSIONED = ("torch", "onnx", "onnxruntime", "numpy", "pillow", "atld-deploy")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """The machine a figure came from, and how busy it was when the measurement was written."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "platform": platform.platform()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_measurement(path: str | Path, command: str, figures: dict[str, Any], **extra: Any) -> Path:
    """Write one measurement file (atomically) and return its path."""
    doc = {"command": command, "commit": _commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "versions": versions(), **extra, "figures": figures}
    write_json_atomic(path, doc)
    return Path(path)


# A figure quoted in the docs is written as `VALUE<!--m FILE PATH FORMAT-->`: FILE under docs/measurements/, PATH
# the keys down to the number joined by "::", FORMAT a Python format spec (`.1%`, `.2f`, `.0f`) with an optional
# suffix after "::" (`.2f::x`); no "|", so markers sit in markdown tables. `python -m atld_deploy.measure` rewrites every VALUE from its file; a test
# fails when any VALUE differs from what its file says.
MARKER = re.compile(r"(?P<value>[^\s(>]*)<!--m (?P<file>\S+) (?P<path>\S+) (?P<fmt>\S+)-->")
MEASUREMENTS = Path(__file__).resolve().parents[1] / "docs" / "measurements"


_AGGREGATES = {"@mean": lambda v: sum(v) / len(v), "@min": min, "@max": max, "@count": len}


def _resolve(doc: Any, path: str) -> Any:
    """Walk `path` ("::"-separated keys or list indices) into `doc`; `*` maps the rest of the path over a list,
    `@mean`/`@min`/`@max`/`@count` reduce a list (a spread over seeds is quoted from the per-seed values)."""
    keys = path.split("::")
    for i, key in enumerate(keys):
        if key == "*":
            rest = [k for k in keys[i + 1:] if k not in _AGGREGATES]
            items = [_resolve(item, "::".join(rest)) if rest else item for item in doc]
            for agg in keys[i + 1:]:
                if agg in _AGGREGATES:
                    return _AGGREGATES[agg](items)
            return items
        doc = _AGGREGATES[key](doc) if key in _AGGREGATES else doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def quoted(match: "re.Match[str]", root: Path = MEASUREMENTS) -> str:
    """What the marker's figure must read, from its measurement file."""
    spec, _, suffix = match["fmt"].partition("::")
    value = _resolve(json.loads((root / match["file"]).read_text()), match["path"])
    return format(value, spec) + suffix


def render_figures(text: str, root: Path = MEASUREMENTS) -> str:
    """`text` with every marked figure replaced by its measurement file's value."""
    return MARKER.sub(lambda m: f"{quoted(m, root)}<!--m {m['file']} {m['path']} {m['fmt']}-->", text)


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[1]
    for doc in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        old = doc.read_text()
        new = render_figures(old)
        if new != old:
            doc.write_text(new)
            print(f"updated {doc.relative_to(repo)}")

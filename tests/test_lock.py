"""requirements/lock.txt pins one exact version of every package, and those pins satisfy pyproject.toml.

A lock that lags behind pyproject.toml (a dependency added or raised without `make lock`) fails here, on any
machine, before an install goes wrong somewhere else.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SERVE_LOCK = ROOT / "requirements" / "serve.txt"  # `serve` (PyTriton pins numpy<2) has its own lock
LOCKED_EXTRAS = ("cpu", "dev", "sign", "cpp")  # what `make lock` resolves, besides the base dependencies
SERVE_EXTRAS = ("cpu", "dev", "sign", "serve")
LOCKED_GROUPS = ("tools",)
# modules of distributions that live in another venv (the serve venv) and so are unknown to this one
ELSEWHERE = {"pytriton": "nvidia-pytriton", "cv2": "opencv-python-headless"}  # modules not installed here
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def read_pins(text: str) -> dict[str, Version]:
    """Every `name==version` line of a lock; any other requirement line is an error (the lock is exact)."""
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match is None:
            raise ValueError(f"not an exact pin: {line!r}")
        name = canonicalize_name(match[1])
        if name in pins:
            raise ValueError(f"{name} is pinned twice")
        pins[name] = Version(match[2])
    return pins


def locked_requirements(pyproject: dict, extras: tuple[str, ...] = LOCKED_EXTRAS) -> list[Requirement]:
    """The base dependencies, the locked extras and the locked dependency groups of a parsed pyproject."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    for group in LOCKED_GROUPS:
        lines += pyproject["dependency-groups"][group]
    return [Requirement(line) for line in lines]


def unmet(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """Each requirement (for this interpreter's platform) that no pin satisfies, as a readable line."""
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req} but the lock pins {pinned}")
    return problems


def test_lock_is_exact_and_satisfies_pyproject() -> None:
    pins = read_pins(LOCK.read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert unmet(locked_requirements(pyproject), pins) == [], "run `make lock`"
    assert "nvidia-pytriton" not in pins  # serving has its own lock (numpy<2)


def test_serve_lock_is_exact_and_satisfies_pyproject() -> None:
    pins = read_pins(SERVE_LOCK.read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert unmet(locked_requirements(pyproject, SERVE_EXTRAS), pins) == [], "run `make lock`"
    assert pins["numpy"] < Version("2") and "nvidia-pytriton" in pins
    main = read_pins(LOCK.read_text())
    assert pins["torch"] == main["torch"] and pins["onnxruntime"] == main["onnxruntime"]  # the same runtime


def imported_modules(source: str) -> set[str]:
    """The top-level names of every absolute import in a module's source, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def undeclared(modules: set[str], declared: set[str]) -> list[str]:
    """Third-party modules whose distribution is not among `declared` (canonical names)."""
    owners = packages_distributions()
    problems = []
    for module in sorted(modules - set(sys.stdlib_module_names) - {"__future__", "atld_deploy"}):
        # not installed here: its known distribution, else its own name
        dists = {canonicalize_name(d) for d in owners.get(module, [ELSEWHERE.get(module, module)])}
        if not dists & declared:
            problems.append(f"{module} (from {', '.join(sorted(dists))})")
    return problems


def test_every_module_the_package_imports_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {canonicalize_name(Requirement(line).name) for line in lines}
    modules = set().union(*(imported_modules(f.read_text()) for f in (ROOT / "atld_deploy").rglob("*.py")))
    assert {"torch", "typer", "PIL", "sklearn"} <= modules  # the walk saw the package's real imports
    assert undeclared(modules, declared) == []


def test_an_undeclared_import_is_caught() -> None:
    # click arrives with model-signing but typer 0.29 no longer depends on it: importing it is a bug
    modules = imported_modules("import os\nimport numpy as np\n\ndef f():\n    from click import echo\n")
    assert undeclared(modules, {"numpy", "typer"}) == ["click (from click)"]


def test_a_lagging_lock_is_caught() -> None:
    pins = read_pins("numpy==2.4.6\ntyper==0.29.2\n")
    wanted = [Requirement("numpy>=3"), Requirement("typer>=0.12"), Requirement("hypothesis>=6"),
              Requirement("pywin32>=300; sys_platform == 'win32'")]
    assert unmet(wanted, pins) == ["numpy>=3 but the lock pins 2.4.6", "hypothesis>=6 is not in the lock"]


@pytest.mark.parametrize(("text", "message"), [("numpy>=2\n", "not an exact pin"),
                                              ("numpy==2.4.6\nNumPy==2.4.6\n", "pinned twice")])
def test_a_loose_line_in_the_lock_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_pins(text)

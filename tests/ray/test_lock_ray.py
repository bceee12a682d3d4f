"""requirements/lock-ray.txt is requirements/lock.txt plus the `ray` extra: every base pin unchanged (so the
suites that ran on the base lock ran on these versions), every added package pinned exactly."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version
from test_lock import locked_requirements, read_pins, unmet

ROOT = Path(__file__).resolve().parents[2]
RAY_LOCK = ROOT / "requirements" / "lock-ray.txt"


def drifted(base: dict[str, Version], extended: dict[str, Version]) -> list[str]:
    """Each base pin the extended lock drops or moves, as a readable line."""
    return [f"{name}: {v} in lock.txt, {extended.get(name, 'nothing')} in lock-ray.txt"
            for name, v in sorted(base.items()) if extended.get(name) != v]


def test_ray_lock_keeps_every_base_pin_and_satisfies_the_extra() -> None:
    base = read_pins((ROOT / "requirements" / "lock.txt").read_text())
    text = RAY_LOCK.read_text()
    pins = read_pins(text)
    assert drifted(base, pins) == [], "run `make lock`"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = locked_requirements(pyproject) + [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["ray"]]
    assert unmet(wanted, pins) == [], "run `make lock`"
    assert {"ray", "pyarrow", "pandas"} <= set(pins) - set(base)
    assert "make lock" in text.splitlines()[1]  # the header names the command that wrote it


def test_a_moved_or_dropped_base_pin_is_caught() -> None:
    base = {"numpy": Version("2.4.6"), "torch": Version("2.14.1")}
    assert drifted(base, {"numpy": Version("2.3.0"), "ray": Version("2.60.0")}) == [
        "numpy: 2.4.6 in lock.txt, 2.3.0 in lock-ray.txt", "torch: 2.14.1 in lock.txt, nothing in lock-ray.txt"]

"""The runtime's import boundary: serving an artifact never loads the exporter, torch's ONNX exporter or the
data-set readers, and the artifact contract and graph catalogue load without torch at all. Each import runs in
a fresh interpreter, so what other tests imported cannot hide a leak."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("torch.onnx", "atld_deploy.export.exporter", "atld_deploy.data")


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def leaks(modules: set[str]) -> list[str]:
    """The forbidden modules (or their submodules) among `modules`."""
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_importing_the_runtime_loads_no_exporter_no_onnx_export_no_data_readers() -> None:
    modules = loaded_by("import atld_deploy.runtime")
    assert "atld_deploy.runtime.select" in modules  # the probe saw the runtime load
    assert leaks(modules) == []


@pytest.mark.parametrize("module", ["atld_deploy.artifact", "atld_deploy.graphs"])
def test_the_contract_and_the_catalogue_load_without_torch(module: str) -> None:
    modules = loaded_by(f"import {module}")
    assert module in modules and "torch" not in modules


def test_the_probe_sees_a_leak() -> None:
    # the same check on imports that do load them: it must name each one
    assert set(leaks(loaded_by("import atld_deploy.export.exporter, atld_deploy.data"))) >= {
        "atld_deploy.export.exporter", "atld_deploy.data"}
    assert "torch.onnx" in leaks(loaded_by("import torch.onnx"))

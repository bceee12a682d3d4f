"""`verify --engines`: every graph on the other inference engines users embed, held to ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from atld_deploy.cli import main


def test_verify_runs_the_engine_matrix(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tiny_artifacts), "--parity-real", "32", "--parity-random", "8",
                 "--engines", "onnxruntime,reference,opencv"]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if len(l.split()) > 2 and l.split()[1] == "reference"]
    assert {l.split()[0] for l in rows} >= {"classifier", "discriminator", "pipeline"}
    assert all("agrees" in l for l in rows), out
    assert "opencv" in out  # installed or not, it is reported (agrees, or skipped with the reason)


def test_an_unknown_engine_is_one_clear_error(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tiny_artifacts), "--parity-real", "16", "--parity-random", "4", "--engines", "tvm"]) == 2
    assert "tvm" in capsys.readouterr().err

"""`atld-deploy bench`: a table and a JSON file of images/s and latency per backend, graph and batch size."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from atld_deploy.cli import main
from atld_deploy.cli_app import app
from atld_deploy.runtime.bench import run_bench


def test_bench_cli_prints_a_table_and_writes_json(tiny_artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(tiny_artifacts), "--backends", "onnxruntime,tensorrt",
                                      "--batch-sizes", "1,4", "--iters", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime (CPUExecutionProvider) pipeline" in result.output
    assert "not measured: tensorrt/pipeline" in result.output
    data = json.loads(out.read_text())
    rows = {(r["graph"], r["batch_size"]): r for r in data["rows"]}
    assert set(rows) == {("classifier", 1), ("classifier", 4), ("pipeline", 1), ("pipeline", 4)}
    assert all(r["images_per_s"] > 0 and r["p95_ms"] >= r["p50_ms"] > 0 for r in rows.values())


def test_bench_rows_for_every_available_backend(tiny_artifacts: Path) -> None:
    rows, unavailable = run_bench(tiny_artifacts, backends=["all"], batch_sizes=[2], iters=1, graphs=["pipeline"])
    assert {r.backend.split()[0] for r in rows} == {"onnxruntime", "torch"}
    assert "tensorrt/pipeline" in unavailable


def test_bench_bad_batch_sizes_exit_2(tiny_artifacts: Path, capsys) -> None:  # noqa: ANN001
    assert main(["bench", str(tiny_artifacts), "--batch-sizes", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err

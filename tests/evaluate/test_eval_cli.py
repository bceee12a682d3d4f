"""`atld-deploy eval` and `atld-deploy reproduce` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atld_deploy.cli import main
from atld_deploy.cli import app  # importing cli registers every command
from atld_deploy.evaluate import evaluate_run, format_table, subset_indices


def test_eval_writes_all_three_protocols_for_static_imt_and_imt_plus(tiny_run, tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "r" / "eval.json", tmp_path / "eval.md"
    result = CliRunner().invoke(app, ["eval", str(tiny_run), "--n", "12", "--attacks", "clean,fgsm,pgd20-imtloss",
                                      "--json", str(out_json), "--markdown", str(out_md), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "IMT+ / worst-case (WORST CASE)" in result.output
    records = json.loads(out_json.read_text())
    assert isinstance(records, list)
    cells = {(r["model"], r["protocol"], r["attack"]) for r in records}
    for model in ("static", "imt", "imt+"):
        for protocol in ("published", "adaptive", "worst-case"):
            assert (model, protocol, "clean") in cells
    assert ("imt+", "adaptive", "pgd20-imtloss") in cells and ("static", "published", "pgd20-imtloss") not in cells
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == 12 and isinstance(r["warnings"], list)
    md = out_md.read_text()
    assert md.startswith("| model / protocol | clean | fgsm | pgd20-imtloss | all |")
    assert "**>> IMT / worst-case (WORST CASE)**" in md


def test_eval_on_a_baseline_run_evaluates_static_only_and_says_so(tiny_standard_run) -> None:
    report = evaluate_run(tiny_standard_run, attacks="clean,fgsm", n=10)
    assert {r["model"] for r in report.records} == {"static"}
    assert any("no discriminator" in note for note in report.meta["notes"])
    assert "no discriminator" in format_table(report)


def test_eval_subset_is_fixed_by_the_seed_and_capped_at_the_split(tiny_standard_run) -> None:
    assert torch.equal(subset_indices(360, 30, 3), subset_indices(360, 30, 3))
    assert not torch.equal(subset_indices(360, 30, 3), subset_indices(360, 30, 4))
    a = evaluate_run(tiny_standard_run, attacks="clean,fgsm", n=30, seed=3, protocols="published")
    b = evaluate_run(tiny_standard_run, attacks="clean,fgsm", n=30, seed=3, protocols="published")
    assert [(r["attack"], r["correct"]) for r in a.records] == [(r["attack"], r["correct"]) for r in b.records]
    full = evaluate_run(tiny_standard_run, attacks="clean", n=500, protocols="published")
    assert full.records[0]["n"] == 360 and any("has 360 examples" in note for note in full.meta["notes"])


def test_eval_bad_input_is_one_clear_error(tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--attacks", "pgd7"]) == 2
    assert "unknown attack" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--models", "imt++"]) == 2
    assert "IMT mode must be one of static, imt, imt-plus, got 'imt++'" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_end_to_end_writes_the_report_it_prints(tmp_path: Path) -> None:
    out = tmp_path / "REPRODUCTION.md"
    result = CliRunner().invoke(app, ["reproduce", "--out", str(out), "--workdir", str(tmp_path / "w"),
                                      "--epochs", "1", "--n", "16", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    table = result.output.split("[eval] atld")[-1]
    table = table[table.index("| model |"):table.index("wrote")].strip()
    assert table in text  # the numbers in the file are the ones the command printed
    for needle in ("Which of the paper's claims hold", "CIFAR-100", "SVHN", "~144 h", "--epochs 1 --n 16 --arch wrn-10-1",
                   "- Seeds: 2 (training and evaluation seed 0 to 1)", "## Spread over 2 seed(s): 0, 1"):
        assert needle in text
    assert (tmp_path / "w" / "seed-1" / "atld" / "summary.json").is_file()  # the second seed trained its own runs
    spread = text.split("## Spread over")[1]
    assert "| atld | imt+ | worst-case | all |" in spread


def test_eval_reports_overall_progress_that_reaches_its_total(tiny_run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--n", "8", "--attacks", "clean,fgsm,pgd20-imtloss", "--batch-size", "8"]) == 0
    steps = [l for l in capsys.readouterr().err.splitlines() if l.startswith("[")]
    totals = {l.split("]")[0].split("/")[1] for l in steps}
    assert len(totals) == 1 and steps and all("ETA" in l for l in steps)
    total = int(totals.pop())
    assert [int(l[1:].split("/")[0]) for l in steps] == list(range(1, total + 1))
    # 2 attacks the static classifier runs under the published protocol + 3 adaptive runs for each IMT mode
    assert total == 2 + 2 * 3

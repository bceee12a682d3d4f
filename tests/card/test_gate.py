"""The deployment gate: `auto` follows the card (every branch on hand-made cards), ties go to the cheaper mode,
no card keeps the exported pipeline, and an explicit mode overrides the card."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from atld_deploy.cli import main
from atld_deploy.errors import ConfigError
from atld_deploy.gate import choose, decide, half_width, reexport_command, verdict
from atld_deploy.runtime import Classifier

from card_fixtures import hand_card, with_card

ALL = ["static", "imt", "imt-plus"]


def test_half_width_is_wilsons_and_never_zero() -> None:
    # Wilson at p = 0.5, n = 100: 1.96 * sqrt(0.0025 + 1.96^2 / 40000) / (1 + 1.96^2 / 100)
    assert half_width(0.5, 100) == pytest.approx(1.959964 * math.sqrt(0.0025 + 1.959964**2 / 40000) / 1.0384146, rel=1e-5)
    assert half_width(0.0, 200) > 0 and half_width(1.0, 200) > 0
    assert half_width(0.5, 400) < half_width(0.5, 100)


def test_the_best_worst_case_wins_when_it_is_clear() -> None:
    assert choose({"static": 0.57, "imt": 0.003, "imt-plus": 0.163}, 300)[0] == "static"
    assert choose({"static": 0.20, "imt": 0.25, "imt-plus": 0.60}, 300)[0] == "imt-plus"
    mode, why = choose({"static": 0.20, "imt": 0.60, "imt-plus": 0.30}, 300)
    assert mode == "imt" and "deploy IMT" in why


def test_a_tie_goes_to_the_cheaper_mode_and_prints_both_figures_and_the_interval() -> None:
    # 2 points apart on 100 images: well inside the ~9.6-point half-width -> static, the cheapest
    mode, why = choose({"static": 0.58, "imt": 0.10, "imt-plus": 0.60}, 100)
    hw = half_width(0.59, 100)
    assert mode == "static" and "tie" in why and "60.0%" in why and "58.0%" in why and f"{100 * hw:.1f}" in why
    # the same 2 points on 100,000 images are far outside the interval: IMT+ wins
    assert choose({"static": 0.58, "imt": 0.10, "imt-plus": 0.60}, 100_000)[0] == "imt-plus"
    # IMT ties with IMT+ and both beat static: IMT (cheaper than IMT+)
    assert choose({"static": 0.10, "imt": 0.59, "imt-plus": 0.60}, 100)[0] == "imt"
    # exactly equal figures tie as well
    assert choose({"static": 0.3, "imt-plus": 0.3}, 10_000)[0] == "static"


def test_decide_without_a_card_serves_the_export_and_says_there_is_no_evidence() -> None:
    d = decide(None, ALL, "imt-plus")
    assert d.mode == "imt-plus" and "no robustness card" in d.reason
    assert decide({}, ["static", "imt-plus"], "imt-plus").mode == "imt-plus"


def test_decide_when_the_card_prefers_a_mode_the_artifact_lacks() -> None:
    card = hand_card({"static": 0.1, "imt": 0.6, "imt-plus": 0.3}, 300)
    d = decide(card, ["static", "imt-plus"], "imt-plus")
    assert d.mode == "imt-plus" and d.preferred == "imt" and "the card prefers IMT (" in d.reason
    assert "does not ship" in d.reason and d.reason.endswith(f"re-export with `{reexport_command('imt')}`")
    assert "best available: worst case static 10.0% < IMT+ 30.0%" in d.reason  # the choice among what it ships
    d = decide(hand_card({"static": 0.35, "imt": 0.6, "imt-plus": 0.1}, 300), ["static", "imt-plus"], "imt-plus")
    assert d.mode == "static" and d.preferred == "imt" and "--imt imt`" in d.reason
    d = decide(hand_card({"static": 0.1, "imt": 0.3, "imt-plus": 0.6}, 300), ["static", "imt"], "imt")
    assert (d.mode, d.preferred) == ("imt", "imt-plus") and "--imt imt-plus`" in d.reason
    # the better mode ties with a shipped cheaper one: nothing better is left out, so nothing is said
    d = decide(hand_card({"static": 0.1, "imt": 0.59, "imt-plus": 0.6}, 100), ["static", "imt"], "imt")
    assert (d.mode, d.preferred) == ("imt", None) and "does not ship" not in d.reason


def test_decide_with_a_card_lacking_the_shipped_modes_keeps_the_export() -> None:
    d = decide(hand_card({"imt": 0.6}, 300), ["static", "imt-plus"], "imt-plus")
    assert d.mode == "imt-plus" and "no worst case for the modes this artifact ships (static, IMT+)" in d.reason


def test_verdict_line_names_the_mode_to_deploy() -> None:
    line = verdict({"static": 0.57, "imt": 0.003, "imt-plus": 0.163}, 300)
    assert line.startswith("verdict: ") and line.endswith("deploy static") and "IMT+ 16.3% < static 57.0%" in line
    assert "no worst-case figures" in verdict({}, 300)


@pytest.mark.parametrize("worst,n,graph,mode", [
    ({"static": 0.57, "imt": 0.003, "imt-plus": 0.163}, 300, "classifier", "static"),
    ({"static": 0.10, "imt": 0.20, "imt-plus": 0.60}, 300, "pipeline", "imt-plus"),
    ({"static": 0.58, "imt": 0.10, "imt-plus": 0.60}, 100, "classifier", "static"),  # a tie
    ({"static": 0.10, "imt": 0.70, "imt-plus": 0.40}, 300, "pipeline", "imt-plus"),  # imt not shipped: best available
])
def test_auto_follows_the_card_in_the_runtime(tiny_artifacts: Path, tmp_path: Path, worst: dict[str, float], n: int,
                                             graph: str, mode: str) -> None:
    art = with_card(tiny_artifacts, tmp_path / "art", hand_card(worst, n))
    with Classifier.load(art, backend="onnxruntime", device="cpu") as clf:  # imt="auto" is the default
        assert (clf.graph, clf.mode) == (graph, mode)
        assert clf.decision is not None and "deploy" in clf.decision.reason


def test_infer_auto_names_the_better_mode_left_out_and_the_export_that_ships_it(
        tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image
    import numpy as np

    # the card prefers IMT clearly; the artifact ships static and the IMT+ pipeline, IMT+ beats static clearly
    art = with_card(tiny_artifacts, tmp_path / "art", hand_card({"static": 0.10, "imt": 0.70, "imt-plus": 0.40}, 300))
    img = tmp_path / "one.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8), mode="L").save(img)
    assert main(["infer", str(img), "-a", str(art), "-o", str(tmp_path / "auto.jsonl"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "running 'pipeline'" in err and "IMT mode IMT+: the card prefers IMT (" in err
    assert "which this artifact does not ship" in err and "`atld-deploy export RUN --output ART --imt imt`" in err
    # asking for the mode left out is refused with the same command
    assert main(["infer", str(img), "-a", str(art), "-o", str(tmp_path / "imt.jsonl"), "--imt", "imt",
                 "--no-progress"]) == 2
    assert "--imt imt" in capsys.readouterr().err


def test_auto_without_a_card_keeps_the_exported_pipeline(tiny_artifacts: Path) -> None:
    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu") as clf:
        assert (clf.graph, clf.mode) == ("pipeline", "imt-plus")
        assert "no robustness card" in clf.describe_mode()


def test_an_explicit_mode_overrides_the_card(tiny_artifacts: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image
    import numpy as np

    art = with_card(tiny_artifacts, tmp_path / "art", hand_card({"static": 0.57, "imt": 0.003, "imt-plus": 0.163}, 300))
    img = tmp_path / "one.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8), mode="L").save(img)
    assert main(["infer", str(img), "-a", str(art), "-o", str(tmp_path / "auto.jsonl"), "--no-progress"]) == 0
    assert "IMT mode static: worst case" in capsys.readouterr().err
    assert main(["infer", str(img), "-a", str(art), "-o", str(tmp_path / "plus.jsonl"), "--imt", "imt-plus",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "running 'pipeline'" in err and "IMT mode IMT+: as asked" in err
    with pytest.raises(ConfigError, match="exported with IMT mode imt-plus"):
        Classifier.load(art, backend="onnxruntime", device="cpu", imt="imt")


def test_eval_prints_the_gates_verdict_under_its_table(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--n", "20", "--attacks", "clean,fgsm", "--batch-size", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    table_end = max(i for i, line in enumerate(out) if "WORST CASE" in line)
    verdict_lines = [line for line in out if line.startswith("verdict: ")]
    assert len(verdict_lines) == 1 and out.index(verdict_lines[0]) > table_end
    assert verdict_lines[0].endswith(("deploy static", "deploy IMT", "deploy IMT+")) and "n=20" in verdict_lines[0]


def test_verdict_line_reads_the_worst_case_rows_of_a_report() -> None:
    from atld_deploy.evaluate.report import EvalReport, verdict_line

    rec = lambda m, a, p, acc: {"model": m, "attack": a, "protocol": p, "accuracy": acc}  # noqa: E731
    report = EvalReport([rec("static", "all", "worst-case", 0.57), rec("imt", "all", "worst-case", 0.003),
                         rec("imt+", "all", "worst-case", 0.163), rec("imt+", "clean", "published", 0.9)],
                        [], {"models": ["static", "imt", "imt+"], "n": 300})
    assert verdict_line(report) == "verdict: " + choose({"static": 0.57, "imt": 0.003, "imt-plus": 0.163}, 300)[1]
    assert "deploy static" in verdict_line(report)

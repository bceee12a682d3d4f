"""The card is vouched for like a graph: listed with its SHA-256, a tampered or missing card refused by `verify`
and the runtime, a manifest claiming a card it does not list refused, bounds on every field the runtime reads,
and writing a card removes a signature."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from atld_deploy.artifact import CARD_FILE, MANIFEST, SIGNATURE, Manifest
from atld_deploy.cli import main
from atld_deploy.errors import ArtifactError, ConfigError
from atld_deploy.evaluate import calibration as cal
from atld_deploy.runtime import Classifier


def test_verify_accepts_the_card_and_refuses_it_tampered(carded: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    shutil.copytree(carded, art)
    assert main(["verify", str(art), "--parity-real", "8", "--parity-random", "4"]) == 0
    capsys.readouterr()
    card = art / CARD_FILE
    card.write_text(card.read_text().replace("deploy", "deploy IMT+ anyway", 1))
    assert main(["verify", str(art)]) == 2
    assert f"{CARD_FILE} does not match the SHA-256" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="does not match the SHA-256"):
        Classifier.load(art, backend="onnxruntime", device="cpu")


@pytest.mark.parametrize("name", [CARD_FILE, "card_p_natural.png"])
def test_a_missing_card_file_is_refused(carded: Path, tmp_path: Path, name: str) -> None:
    art = tmp_path / "art"
    shutil.copytree(carded, art)
    (art / name).unlink()
    with pytest.raises(ArtifactError, match="is listed in .* but missing"):
        Manifest.load(art)


def test_a_card_the_manifest_does_not_list_is_refused(carded: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(carded, art)
    d = json.loads((art / MANIFEST).read_text())
    del d["files"][CARD_FILE]
    (art / MANIFEST).write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match=f"does not list {CARD_FILE}"):
        Manifest.load(art)


@pytest.mark.parametrize("section,patch,where", [
    ("calibration", {"temperature": {"static": 0.0}}, "calibration/temperature/static"),
    ("calibration", {"temperature": {"imt+": 1.0}}, "calibration/temperature"),
    ("detector", {"threshold": 1.5, "fpr": 0.05}, "detector/threshold"),
    ("detector", {"threshold": 0.4, "fpr": 0.0}, "detector/fpr"),
    ("card", {"n": 0, "modes": {"static": {"worst_case": 0.5}}}, "card/n"),
    ("card", {"n": 10, "modes": {"static": {"worst_case": 7}}}, "card/modes/static/worst_case"),
])
def test_out_of_bounds_evidence_is_refused_by_the_schema(carded: Path, tmp_path: Path, section: str,
                                                         patch: dict[str, object], where: str) -> None:
    art = tmp_path / "art"
    shutil.copytree(carded, art)
    d = json.loads((art / MANIFEST).read_text())
    d[section] = patch
    (art / MANIFEST).write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match=where):
        Manifest.load(art)


def test_writing_a_card_removes_the_signature_and_prints_the_heldout_check(
        tiny_artifacts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    (art / SIGNATURE).write_bytes(b"a signature over the artifact before the card")
    assert main(["card", str(art), "--n", "120", "--attacks", "clean", "--batch-size", "200"]) == 0
    assert not (art / SIGNATURE).exists()
    assert any("signature no longer holds" in r.getMessage() for r in caplog.records)
    det = Manifest.load(art).detector
    assert Manifest.load(art).card["attacks"] == ["clean"] and det["n_fit"] == 240
    line = re.search(r"held-out FPR (\d+\.\d)% \(95% predictive interval (\d+\.\d)-(\d+\.\d)% for n_fit=240, "
                     r"m=120: (holds|does NOT hold)\)", capsys.readouterr().out)
    assert line is not None
    lo, hi = det["heldout_interval"]
    assert float(line[1]) == round(100 * det["heldout_fpr"], 1) and (line[4] == "holds") == det["holds"]
    assert lo < det["fpr"] < hi  # the interval is around the rate asked for (k = 12 of 240: 4.98% expected)
    card_md = (art / CARD_FILE).read_text()
    assert cal.heldout_line(det) in card_md and "beta-binomial" in card_md


def test_card_refuses_bad_requests_before_any_work(tiny_artifacts: Path) -> None:
    from atld_deploy.evaluate.card import write_card

    with pytest.raises(ConfigError, match="--detector-fpr is a rate in"):
        write_card(tiny_artifacts, fpr=1.5)
    with pytest.raises(ConfigError, match="leaves 10 for fitting"):
        write_card(tiny_artifacts, n=350, attacks="clean")
    # 240 fitting images cannot place an FPR of 0.1%: its 1st order statistic needs 999 (k = floor(fpr (n+1)))
    with pytest.raises(ConfigError, match="needs at least 999 fitting images .* --n 120 leaves 240; raise "
                                          "--detector-fpr to 0.002778"):
        write_card(tiny_artifacts, n=120, fpr=0.001, attacks="clean")
    with pytest.raises(ConfigError, match="needs at least 99 fitting images .* leaves 60; lower --n to 261"):
        write_card(tiny_artifacts, n=300, fpr=0.01, attacks="clean")
    assert not (tiny_artifacts / CARD_FILE).exists()  # nothing was written into the shared fixture


"""A real card on the session's tiny artifact: calibration and the detector threshold applied the same way by
every backend, `suspect` in every mode and in infer's files, and the threshold holding its false-positive rate
on clean images it was not fitted on (within its predictive interval)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from card_fixtures import CARD_FPR, CARD_N

from atld_deploy.artifact import Manifest
from atld_deploy.cli import main
from atld_deploy.data import load_dataset
from atld_deploy.evaluate import calibration as cal
from atld_deploy.evaluate.card import split_indices
from atld_deploy.runtime import Classifier

BACKENDS = ("onnxruntime", "torch")
P_TOL = 1e-4  # p_natural parity between backends (fp32 graphs); flags may differ only inside it


def _softmax_max(logits: np.ndarray, t: float) -> np.ndarray:
    z = logits.astype(np.float64) / t
    z -= z.max(axis=1, keepdims=True)
    return (np.exp(z).max(axis=1) / np.exp(z).sum(axis=1)).astype(np.float32)


def _images(idx: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_dataset("digits").test.batch(idx)
    return x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def card_images() -> tuple[np.ndarray, np.ndarray]:
    """The card's own evaluation images: never used to fit the temperature or the threshold."""
    return _images(split_indices(360, CARD_N, 0)[0])


def test_the_card_records_what_it_measured(carded: Path) -> None:
    m = Manifest.load(carded)
    assert set(m.card["modes"]) == {"static", "imt", "imt-plus"} and m.card["n"] == CARD_N
    assert set(m.calibration["temperature"]) == {"static", "imt", "imt-plus"}
    assert m.detector["fpr"] == CARD_FPR and m.detector["n_fit"] == 360 - CARD_N
    assert {a["attack"] for a in m.detector["attacks"]} == {"fgsm"}  # clean is the FPR, not an attack
    assert {"CARD.md", "card_reliability.png", "card_p_natural.png"} <= set(m.files)
    for mode, t in m.calibration["temperature"].items():
        print(f"{mode}: T={t:.3f} ECE {100 * m.calibration['ece_before'][mode]:.2f}% -> "
              f"{100 * m.calibration['ece_after'][mode]:.2f}%")
    # trained with label smoothing the tiny model is underconfident: scaling lowers ECE on unfitted images
    assert all(m.calibration["ece_after"][k] < m.calibration["ece_before"][k] for k in m.calibration["temperature"])


@pytest.mark.parametrize("mode", ["static", "imt-plus"])
def test_calibration_is_applied_identically_by_every_backend(carded: Path, mode: str,
                                                             card_images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = card_images
    t = Manifest.load(carded).temperature(mode)
    assert abs(t - 1.0) > 0.05  # a temperature that changes the confidences, so the check below can fail
    confs = {}
    for backend in BACKENDS:
        with Classifier.load(carded, backend=backend, device="cpu", imt=mode) as clf:
            p = clf.predict(x)
            assert clf.temperature == t
            np.testing.assert_allclose(p.confidence, _softmax_max(p.logits, t), atol=1e-6)
            assert np.abs(p.confidence - _softmax_max(p.logits, 1.0)).max() > 0.01  # the raw softmax differs
            confs[backend] = p.confidence
    np.testing.assert_allclose(confs["onnxruntime"], confs["torch"], atol=1e-4)


@pytest.mark.parametrize("mode", ["static", "imt-plus"])
def test_suspect_is_consistent_across_backends_in_every_mode(carded: Path, mode: str,
                                                            card_images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = card_images
    thr = Manifest.load(carded).suspect_threshold()
    assert thr is not None
    out = {}
    for backend in BACKENDS:
        with Classifier.load(carded, backend=backend, device="cpu", imt=mode) as clf:
            p = clf.predict(x)
            assert p.suspect is not None and p.suspect.dtype == np.bool_
            np.testing.assert_array_equal(p.suspect, p.p_natural < thr)
            assert [r["suspect"] for r in p.records()] == p.suspect.tolist()
            out[backend] = p
    a, b = out["onnxruntime"], out["torch"]
    np.testing.assert_allclose(a.p_natural, b.p_natural, atol=P_TOL)
    near = np.abs(a.p_natural - thr) < P_TOL  # only a p_natural within parity of the threshold may flip
    np.testing.assert_array_equal(a.suspect[~near], b.suspect[~near])
    assert 0 < a.suspect.sum() < len(x)  # both outcomes occur, so agreement is not trivial


def test_threshold_holds_its_fpr_on_clean_images_it_was_not_fitted_on(carded: Path,
                                                                     card_images: tuple[np.ndarray, np.ndarray]) -> None:
    """Bar stated up front: the number of the card's clean images below the threshold is beta-binomial (the
    threshold is the k-th smallest of n_fit clean scores, so its own rate is Beta(k, n_fit+1-k); the check adds the
    binomial noise of its images). Recounted through the runtime it must fall in the central 99% predictive
    interval, which a correct threshold misses with probability at most 1%; the manifest's 95% verdict must agree
    with the interval recomputed here."""
    x, _ = card_images
    det = Manifest.load(carded).detector
    n_fit, n_check = det["n_fit"], len(x)
    assert det["k"] == cal.order_statistic(n_fit, CARD_FPR) and det["expected_fpr"] <= CARD_FPR
    lo, hi = cal.predictive_interval(det["k"], n_fit, n_check, 0.99)

    with Classifier.load(carded, backend="onnxruntime", device="cpu", imt="static") as clf:
        p = clf.predict(x).p_natural

    count = int((p < det["threshold"]).sum())
    print(f"threshold {det['threshold']:.4f}: {count} of {n_check} held-out images flagged, 99% predictive "
          f"[{lo}, {hi}] (fitted on {n_fit}); " + cal.heldout_line(det))
    assert lo <= count <= hi
    near = int((np.abs(p - det["threshold"]) < P_TOL).sum())  # the card scored them in PyTorch
    assert abs(count - det["heldout_flagged"]) <= near and det["heldout_n"] == n_check
    lo95, hi95 = cal.predictive_interval(det["k"], n_fit, n_check, 0.95)
    assert det["heldout_interval"] == [round(lo95 / n_check, 6), round(hi95 / n_check, 6)]
    assert det["holds"] == (lo95 <= det["heldout_flagged"] <= hi95)
    # the check can fail: a threshold at the fitting set's median flags about half of the clean images
    assert not lo <= int((p < det["quantiles"]["0.5"]).sum()) <= hi


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_infer_writes_suspect_when_the_artifact_has_a_threshold(carded: Path, tiny_artifacts: Path, tmp_path: Path,
                                                               suffix: str) -> None:
    from PIL import Image

    x, _ = _images(torch.arange(6))
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate(x):
        Image.fromarray((img[0] * 255).round().astype(np.uint8), mode="L").save(images / f"{i}.png")
    out, plain = tmp_path / f"p{suffix}", tmp_path / f"plain{suffix}"
    assert main(["infer", str(images), "-a", str(carded), "-o", str(out), "--no-progress"]) == 0
    assert main(["infer", str(images), "-a", str(tiny_artifacts), "-o", str(plain), "--no-progress"]) == 0
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(isinstance(r["suspect"], bool) for r in rows) and len(rows) == 6
        assert all("suspect" not in json.loads(line) for line in plain.read_text().splitlines())
    else:
        rows = list(csv.DictReader(out.open(newline="")))
        assert len(rows) == 6 and all(r["suspect"] in ("true", "false") for r in rows)
        assert "suspect" not in next(csv.reader(plain.open(newline="")))
    thr = Manifest.load(carded).suspect_threshold()
    assert all((str(r["suspect"]).lower() == "true") == (float(r["p_natural"]) < thr) for r in rows)
    # resuming a file of the other layout is refused (it would mix two column sets)
    if suffix == ".csv":
        assert main(["infer", str(images), "-a", str(carded), "-o", str(plain), "--resume", "--no-progress"]) == 2

"""The robustness card: the evidence an artifact carries about itself (`atld-deploy card ART`).

Two disjoint sets of the run's *test* split, drawn from one seeded permutation:

- the card's evaluation set: its first `n` indices -- exactly the subset `atld-deploy eval --n n --seed s`
  evaluates. Every accuracy, the ECE before/after, the detector's held-out false-positive rate and its TPR/AUC
  per attack are measured here.
- the fitting set: the indices after those (at most `FIT_MAX`). The temperatures and the p_natural threshold are
  fitted here and nowhere else, so nothing the card reports on was fitted on.

Writes into the artifact: the manifest's `calibration`, `detector` and `card` sections, ART/CARD.md and its two
figures, all three listed with their SHA-256 in `files`; an existing signature is removed (it no longer holds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..artifact import CARD_FILE, Manifest
from ..errors import ArtifactError, ConfigError
from ..gate import MODES, PIPELINE_MODES, choose, half_width
from . import calibration as cal
from .api import evaluate_models, subset_indices
from .protocols import Outcome
from .suite import DEFAULT_ATTACKS, parse_attacks
from .targets import build_views

log = logging.getLogger(__name__)

DEFAULT_CARD_N = 500
DEFAULT_FPR = 0.05
MIN_FIT = 50  # fewer held-out images than this cannot place a 5% threshold or a temperature usefully
FIT_MAX = 2000
EVAL_NAMES = {"static": "static", "imt": "imt", "imt-plus": "imt+"}  # card mode -> the evaluation's model name
CARD_NAMES = {v: k for k, v in EVAL_NAMES.items()}
HELDOUT_LEVEL = 0.95  # the held-out check's predictive interval
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def split_indices(num_test: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the card's evaluation indices, the disjoint fitting indices) of a test split of `num_test` images."""
    eval_idx = subset_indices(num_test, n, seed)
    perm = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    fit_idx = perm[len(eval_idx):len(eval_idx) + FIT_MAX].sort().values
    return eval_idx, fit_idx


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> np.ndarray:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).float().numpy()


def write_card(
    art: str | Path,
    n: int = DEFAULT_CARD_N,
    fpr: float = DEFAULT_FPR,
    seed: int = 0,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    eps: float | None = None,
    batch_size: int = 500,
    square_queries: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    echo: Callable[[str], None] = log.info,
) -> Manifest:
    """Evaluate the artifact's run copy on its test split and write the card into the artifact.

    Returns:
        The updated manifest.
    Raises:
        ArtifactError: the artifact does not load, or has no run/ copy. ConfigError: `fpr` outside (0, 1), a bad
            `n`, or a test split too small to leave `MIN_FIT` images for fitting. DataError: the data set is missing.
    """
    from ..data import load_dataset
    from ..run import load_run
    from ..signing import drop_signature
    from .card_report import write_card_files

    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"--detector-fpr is a rate in (0, 1), got {fpr}; 0.05 flags 5% of clean images")
    parse_attacks(attacks)  # unknown names fail before the run is loaded
    art = Path(art)
    manifest = Manifest.load(art)
    if not manifest.run_dir(art).is_dir():
        raise ArtifactError(f"{art} has no run/ copy, which the card evaluates; re-export the run with "
                            f"`atld-deploy export RUN --output {art}`")
    t0 = time.perf_counter()
    run = load_run(manifest.run_dir(art))
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.data_dir, False, cfg.image_size)
    eval_idx, fit_idx = split_indices(len(data.test), n, seed)
    if len(fit_idx) < MIN_FIT:
        raise ConfigError(f"--n {n}: the {cfg.dataset} test split has {len(data.test)} images, which leaves "
                          f"{len(fit_idx)} for fitting the temperature and threshold (at least {MIN_FIT} needed); "
                          f"lower --n to {max(1, len(data.test) - MIN_FIT)} or less")
    if run.discriminator is not None and len(fit_idx) < cal.min_fit(fpr):
        raise ConfigError(_too_few_for_fpr(fpr, n, len(fit_idx), len(data.test)))
    x, y = data.test.batch(eval_idx)
    x_fit, y_fit = data.test.batch(fit_idx)
    eps = cfg.eps if eps is None else eps
    modes = [m for m in MODES if m == "static" or run.discriminator is not None]
    views = {m: build_views(EVAL_NAMES[m], run.classifier, run.discriminator, lambda k: run.imt_config(k))
             for m in modes}
    where = f"{cfg.dataset} test split"
    echo(f"card: evaluating {len(x)} images of the {where} (seed {seed}); fitting on {len(x_fit)} others")

    # temperatures on the fitting set; ECE before/after on the card's own (never fitted) images
    calib: dict[str, Any] = {"temperature": {}, "ece_before": {}, "ece_after": {}, "nll_before": {}, "nll_after": {},
                             "bins": cal.ECE_BINS, "fit": {"split": f"{where}, {len(x_fit)} images outside the card's",
                                                           "n": len(x_fit)},
                             "measured_on": f"the card's {len(x)} clean images"}
    bins: dict[str, Any] = {}
    yn, yfn = y.numpy(), y_fit.numpy()
    for m in modes:
        logits_fit = _batched(views[m].deployed, x_fit, batch_size)
        logits = _batched(views[m].deployed, x, batch_size)
        t = cal.fit_temperature(logits_fit, yfn)
        before, bins_before = cal.reliability(logits, yn)
        after, bins_after = cal.reliability(logits, yn, t)
        calib["temperature"][m] = round(t, 6)
        calib["ece_before"][m], calib["ece_after"][m] = round(before, 6), round(after, 6)
        calib["nll_before"][m], calib["nll_after"][m] = round(cal.nll(logits, yn), 6), round(cal.nll(logits, yn, t), 6)
        bins[m] = {"before": bins_before, "after": bins_after}
        echo(f"card: {m} temperature {t:.3f}: ECE {100 * before:.2f}% -> {100 * after:.2f}%")

    detector: dict[str, Any] = {}
    p_adv: dict[tuple[str, ...], list[torch.Tensor]] = {}
    p_clean = None
    if run.discriminator is not None:
        disc, clf = run.discriminator, run.classifier

        def p_natural(xb: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(disc(clf(xb))[0])

        p_fit = _batched(p_natural, x_fit, batch_size)
        p_clean = _batched(p_natural, x, batch_size)
        threshold = cal.threshold_at_fpr(p_fit, fpr)
        detector = {"threshold": round(threshold, 8), "fpr": fpr, "n_fit": len(p_fit),
                    "fit": calib["fit"]["split"],
                    "quantiles": {str(q): round(float(np.quantile(p_fit, q)), 6) for q in QUANTILES},
                    **heldout_check(p_fit, p_clean, threshold, fpr), "attacks": []}
        echo(f"card: p_natural threshold {threshold:.4f}, the k-th smallest (k={detector['k']}) of {len(p_fit)} "
             f"fitting images (expected FPR {100 * detector['expected_fpr']:.2f}% <= {100 * fpr:.1f}%); "
             + cal.heldout_line(detector))

        def collect(key: tuple[str, ...], x_adv: torch.Tensor) -> None:
            with torch.no_grad():
                p_adv.setdefault(key, []).append(p_natural(x_adv))

    report = evaluate_models(
        run.classifier, run.discriminator, x, y, eps=eps, num_classes=run.shape.num_classes,
        imt_config=lambda k: run.imt_config(k), attacks=attacks, models=[EVAL_NAMES[m] for m in modes],
        batch_size=batch_size, seed=seed, square_queries=square_queries, on_outcome=on_outcome,
        on_adversarial=collect if run.discriminator is not None else None)
    card = _card_section(report, modes, len(x), eps, seed, where)
    if p_clean is not None:
        for key, parts in p_adv.items():
            if key[-1] == "clean":
                continue
            pa = torch.cat(parts).numpy()
            detector["attacks"].append({
                "protocol": key[0], "model": CARD_NAMES[key[1]] if key[0] == "adaptive" else "all", "attack": key[-1],
                "tpr": round(float((pa < detector["threshold"]).mean()), 6), "auc": round(cal.roc_auc(p_clean, pa), 6),
                "n": len(pa)})
    card["seconds"] = round(time.perf_counter() - t0, 1)
    files = write_card_files(art, manifest, card, calib, detector, bins, p_clean, p_adv)
    updated = replace(manifest, calibration=calib, detector=detector, card=card, files={**manifest.files, **files})
    updated.save(art)
    drop_signature(art, f"the robustness card was written ({CARD_FILE})")
    Manifest.load(art)  # what was written reads back and every listed file matches its hash
    return updated


def heldout_check(p_fit: np.ndarray, p_clean: np.ndarray, threshold: float, fpr: float,
                  level: float = HELDOUT_LEVEL) -> dict[str, Any]:
    """The detector section's held-out check: how many of the card's clean images `threshold` flags, against the
    predictive interval of that count, which includes the threshold's own noise (it is an order statistic of
    `p_fit`), not only the card's binomial noise."""
    k, m = cal.order_statistic(len(p_fit), fpr), len(p_clean)
    flagged = int((p_clean < threshold).sum())
    lo, hi = cal.predictive_interval(k, len(p_fit), m, level)
    return {"k": k, "expected_fpr": round(k / (len(p_fit) + 1), 6), "heldout_fpr": round(flagged / max(m, 1), 6),
            "heldout_n": m, "heldout_flagged": flagged, "heldout_level": level,
            "heldout_interval": [round(lo / max(m, 1), 6), round(hi / max(m, 1), 6)], "holds": lo <= flagged <= hi}


def _too_few_for_fpr(fpr: float, n: int, n_fit: int, num_test: int) -> str:
    """Why --detector-fpr cannot be placed on this fitting set, and what to change."""
    need = cal.min_fit(fpr)
    fix = (f"lower --n to {num_test - need} or less, or raise --detector-fpr" if need <= min(FIT_MAX, num_test - 1)
           else f"raise --detector-fpr to {1 / (min(FIT_MAX, num_test - 1) + 1):.4g} or more (at most {FIT_MAX} "
                "fitting images are used)")
    return (f"--detector-fpr {fpr:g}: a threshold whose expected false-positive rate stays at or below it needs at "
            f"least {need} fitting images (the floor(fpr x (n_fit+1))-th smallest p_natural), but --n {n} leaves "
            f"{n_fit}; {fix}")


def _card_section(report: Any, modes: list[str], n: int, eps: float, seed: int, where: str) -> dict[str, Any]:
    """The manifest's `card`: per mode clean, published and adaptive accuracy per attack, worst case; the verdict."""
    from ..measure import _commit, machine

    per_mode: dict[str, Any] = {}
    attacks = report.meta["attacks"]
    for m in modes:
        name = EVAL_NAMES[m]
        rows = {p: {a: report.accuracy(name, a, p) for a in attacks if report.accuracy(name, a, p) is not None}
                for p in ("published", "adaptive")}
        wc = report.accuracy(name, "all", "worst-case")
        clean = report.accuracy(name, "clean", "published")
        per_mode[m] = {"clean": clean if clean is not None else report.accuracy(name, "clean", "adaptive"),
                       "published": rows["published"], "adaptive": rows["adaptive"],
                       "worst_case": wc, "worst_case_half_width": round(half_width(wc, n), 6)}
    figures = {m: v["worst_case"] for m, v in per_mode.items()}
    preferred, verdict = choose(figures, n)
    return {"n": n, "eps": eps, "seed": seed, "attacks": list(attacks), "split": f"{where}, seeded subset",
            "modes": per_mode, "preferred": preferred, "verdict": verdict,
            "square_queries": report.meta["square_queries"], "warnings": [w["message"] for w in report.warnings],
            "commit": _commit(), "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def pipeline_mode(manifest: Manifest) -> str | None:
    """The mode the artifact's pipeline graph serves (None: no IMT step)."""
    return PIPELINE_MODES.get(str(manifest.imt.get("mode", "")))

"""The statistics behind the card: temperature scaling, expected calibration error, the detector's threshold
at a false-positive rate and the predictive interval of its held-out count, ROC AUC. Numpy on arrays of
logits and probabilities (scipy for the beta-binomial).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError

ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017)
T_RANGE = (0.05, 20.0)  # temperatures searched (inside the manifest schema's bounds)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    lp = _log_softmax(logits.astype(np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iters: int = 60) -> float:
    """The temperature minimising the NLL of `labels` (golden-section search on log T over `T_RANGE`).

    The NLL is convex in 1/T, hence unimodal in log T, so the search finds its minimum to ~1e-6 in log T."""
    if len(labels) == 0:
        raise ValueError("no examples to fit a temperature on")
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def confidences(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label, max softmax probability of logits / temperature) per row."""
    lp = _log_softmax(logits.astype(np.float64) / temperature)
    return logits.argmax(axis=1), np.exp(lp.max(axis=1))


def reliability(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                bins: int = ECE_BINS) -> tuple[float, list[dict[str, float]]]:
    """(expected calibration error, per-bin {lo, hi, n, confidence, accuracy}) of softmax(logits / T)."""
    pred, conf = confidences(logits, temperature)
    correct = pred == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = idx == b
        k = int(sel.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": k,
               "confidence": float(conf[sel].mean()) if k else 0.0, "accuracy": float(correct[sel].mean()) if k else 0.0}
        ece += k / max(len(labels), 1) * abs(row["confidence"] - row["accuracy"])
        table.append(row)
    return float(ece), table


def order_statistic(n_fit: int, fpr: float) -> int:
    """k = floor(fpr * (n_fit + 1)): the threshold is the k-th smallest of `n_fit` clean scores (0: too few)."""
    return int(math.floor(fpr * (n_fit + 1)))


def min_fit(fpr: float) -> int:
    """The fewest clean fitting images for which a threshold at `fpr` exists (k >= 1)."""
    n = max(1, math.ceil(1 / fpr) - 1)
    while order_statistic(n, fpr) < 1:  # float rounding of fpr * (n + 1) just below an integer
        n += 1
    return n


def threshold_at_fpr(p_clean: np.ndarray, fpr: float) -> float:
    """The p_natural threshold (flag p < threshold) at false-positive rate `fpr`: the k-th smallest of the n
    clean scores, k = floor(fpr * (n + 1)).

    Guarantee: a new clean image exchangeable with `p_clean` is flagged with probability k / (n + 1) <= fpr.

    Raises:
        ConfigError: k = 0, i.e. fewer than `min_fit(fpr)` clean images (the message names that minimum).
    """
    n = len(p_clean)
    k = order_statistic(n, fpr)
    if k < 1:
        raise ConfigError(f"a p_natural threshold at FPR {fpr:g} needs at least {min_fit(fpr)} clean fitting images "
                          f"(the floor(fpr x (n+1))-th smallest must exist), got {n}; fit on more images or raise "
                          "the FPR")
    return float(np.sort(p_clean.astype(np.float64))[k - 1])


def heldout_pmf(k: int, n_fit: int, m: int) -> np.ndarray:
    """P(x of `m` new clean images fall below the k-th smallest of `n_fit` clean scores), x = 0..m.

    The threshold's true FPR is Beta(k, n_fit + 1 - k) for exchangeable continuous scores, so the count is
    beta-binomial(m, k, n_fit + 1 - k): the binomial noise of the m images plus the threshold's own."""
    from scipy.stats import betabinom

    if not 1 <= k <= n_fit or m < 0:
        raise ValueError(f"order statistic k={k} of n_fit={n_fit} scores, m={m} images: need 1 <= k <= n_fit, m >= 0")
    return betabinom(m, k, n_fit + 1 - k).pmf(np.arange(m + 1))


def predictive_interval(k: int, n_fit: int, m: int, level: float = 0.95) -> tuple[int, int]:
    """The central `level` predictive interval [lo, hi] of the count `heldout_pmf` describes: each tail outside
    it holds at most (1 - level) / 2, so a correct threshold's count lands inside with probability >= level."""
    cdf = np.cumsum(heldout_pmf(k, n_fit, m))
    tail = (1 - level) / 2
    lo = int(np.searchsorted(cdf, tail, side="right"))  # first x with P(X <= x) > tail: P(X < lo) <= tail
    hi = int(np.searchsorted(cdf, 1 - tail - 1e-12, side="left"))  # first x with P(X <= x) >= 1 - tail
    return lo, min(hi, m)


def heldout_line(detector: dict[str, Any]) -> str:
    """The held-out check of a manifest's `detector` section, in one line."""
    lo, hi = detector["heldout_interval"]
    return (f"held-out FPR {100 * detector['heldout_fpr']:.1f}% ({100 * detector['heldout_level']:.0f}% predictive "
            f"interval {100 * lo:.1f}-{100 * hi:.1f}% for n_fit={detector['n_fit']}, m={detector['heldout_n']}: "
            f"{'holds' if detector['holds'] else 'does NOT hold'})")


def roc_auc(p_clean: np.ndarray, p_attacked: np.ndarray) -> float:
    """ROC AUC of flagging low p_natural: P(p_attacked < p_clean) + P(equal) / 2 (Mann-Whitney)."""
    if len(p_clean) == 0 or len(p_attacked) == 0:
        return float("nan")
    c = np.sort(p_clean.astype(np.float64))
    a = p_attacked.astype(np.float64)
    greater = len(c) - np.searchsorted(c, a, side="right")
    equal = np.searchsorted(c, a, side="right") - np.searchsorted(c, a, side="left")
    return float((greater + 0.5 * equal).sum() / (len(c) * len(a)))

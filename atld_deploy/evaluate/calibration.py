"""The statistics behind the card: temperature scaling, expected calibration error, the detector's threshold
at a false-positive rate, ROC AUC and binomial intervals. Plain numpy on arrays of logits and probabilities.
"""

from __future__ import annotations

import math

import numpy as np

from ..gate import Z95

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


def threshold_at_fpr(p_clean: np.ndarray, fpr: float) -> float:
    """The p_natural threshold flagging (p < threshold) at most a fraction `fpr` of `p_clean`: its
    floor(fpr * n)-th smallest value, so exactly that many fitted images lie strictly below it (without ties)."""
    if len(p_clean) == 0:
        raise ValueError("no clean images to fit a threshold on")
    s = np.sort(p_clean.astype(np.float64))
    k = min(int(math.floor(fpr * len(s))), len(s) - 1)
    return float(s[k])


def roc_auc(p_clean: np.ndarray, p_attacked: np.ndarray) -> float:
    """ROC AUC of flagging low p_natural: P(p_attacked < p_clean) + P(equal) / 2 (Mann-Whitney)."""
    if len(p_clean) == 0 or len(p_attacked) == 0:
        return float("nan")
    c = np.sort(p_clean.astype(np.float64))
    a = p_attacked.astype(np.float64)
    greater = len(c) - np.searchsorted(c, a, side="right")
    equal = np.searchsorted(c, a, side="right") - np.searchsorted(c, a, side="left")
    return float((greater + 0.5 * equal).sum() / (len(c) * len(a)))


def binomial_half_width(p: float, n: int, z: float = Z95) -> float:
    """Normal-approximation half-width of a rate `p` measured on `n` trials (the FPR check's noise)."""
    return z * math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 1.0

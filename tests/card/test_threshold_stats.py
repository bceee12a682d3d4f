"""The detector threshold's statistics on draws from a known continuous distribution: the order-statistic
threshold keeps its false-positive rate on new clean scores, the beta-binomial predictive interval of the held-out
count covers as often as it says, and the test-only binomial interval the card used to print does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from atld_deploy.errors import ConfigError
from atld_deploy.evaluate import calibration as cal

# the demo's sizes: the threshold fitted on 160 clean images, checked on the card's 200
N_FIT, M, FPR = 160, 200, 0.05
REPEATS = 4000
COVERAGE_BAR = 0.93  # for a nominal 95% interval; see test_predictive_interval_covers_and_the_binomial_one_does_not


@pytest.fixture(scope="module")
def repeats() -> dict[str, np.ndarray]:
    """REPEATS seeded fit-then-check rounds on standard normal scores (clean p_natural stand-in; any continuous
    distribution gives the same counts): per round the threshold, its true FPR Phi(threshold), the held-out count,
    and the same for the old floor(fpr x n)-th order statistic (0-based index) the card used to place."""
    rng = np.random.default_rng(20261202)
    fit = rng.standard_normal((REPEATS, N_FIT))
    check = rng.standard_normal((REPEATS, M))
    thr = np.array([cal.threshold_at_fpr(f, FPR) for f in fit])
    old = np.sort(fit, axis=1)[:, math.floor(FPR * N_FIT)]
    return {"thr": thr, "true_fpr": norm.cdf(thr), "count": (check < thr[:, None]).sum(axis=1),
            "old_true_fpr": norm.cdf(old), "old_count": (check < old[:, None]).sum(axis=1)}


def test_the_threshold_keeps_its_fpr_on_new_clean_scores(repeats: dict[str, np.ndarray]) -> None:
    """Bar stated up front: the mean true FPR over REPEATS rounds may exceed `FPR` by at most 4 standard errors.
    One round's true FPR is Beta(k, n+1-k), whose variance mu(1-mu)/(n+2) is at most FPR(1-FPR)/(N_FIT+2) when its
    mean mu = k/(n+1) <= FPR, so 4 * sqrt(FPR(1-FPR) / ((N_FIT+2) REPEATS)) bounds the noise (p < 4e-5 one-sided).
    The old placement (one order statistic higher) must fail the same bar."""
    bound = 4 * math.sqrt(FPR * (1 - FPR) / ((N_FIT + 2) * REPEATS))
    mean, old_mean = float(repeats["true_fpr"].mean()), float(repeats["old_true_fpr"].mean())
    print(f"mean true FPR {100 * mean:.3f}% (old placement {100 * old_mean:.3f}%), bar {100 * (FPR + bound):.3f}%")
    assert mean <= FPR + bound
    assert old_mean > FPR + bound
    k = cal.order_statistic(N_FIT, FPR)
    assert k / (N_FIT + 1) <= FPR < (k + 1) / (N_FIT + 1)  # the largest k the guarantee allows


def test_predictive_interval_covers_and_the_binomial_one_does_not(repeats: dict[str, np.ndarray]) -> None:
    """Bar stated up front: coverage >= 93% over REPEATS rounds for a 95% interval. If the true coverage is at least
    95%, the observed one is Binomial(REPEATS, 0.95) / REPEATS and falls below 93% with probability < 1e-6 (checked
    below), so a correct interval passes. The card's old interval, FPR +- 1.96 sqrt(FPR(1-FPR)/M) (the held-out
    sample's noise only), must fail the same bar on the same rounds."""
    assert binom.cdf(math.ceil(COVERAGE_BAR * REPEATS) - 1, REPEATS, 0.95) < 1e-6
    lo, hi = cal.predictive_interval(cal.order_statistic(N_FIT, FPR), N_FIT, M)
    count = repeats["count"]
    coverage = float(((count >= lo) & (count <= hi)).mean())
    hw = 1.959964 * math.sqrt(FPR * (1 - FPR) / M)
    old_lo, old_hi = M * (FPR - hw), M * (FPR + hw)
    old_cov = float(((count >= old_lo) & (count <= old_hi)).mean())
    old_cov_old_thr = float(((repeats["old_count"] >= old_lo) & (repeats["old_count"] <= old_hi)).mean())
    print(f"predictive [{lo}, {hi}] of {M}: coverage {100 * coverage:.1f}%; binomial [{old_lo:.1f}, {old_hi:.1f}]: "
          f"{100 * old_cov:.1f}% (with the old threshold {100 * old_cov_old_thr:.1f}%)")
    assert coverage >= COVERAGE_BAR
    assert old_cov < COVERAGE_BAR and old_cov_old_thr < COVERAGE_BAR


def test_heldout_pmf_is_the_order_statistic_count() -> None:
    """The pmf sums to 1 and equals the exact count of rank arrangements: among n_fit + m exchangeable scores,
    x of the m new ones lie below the k-th smallest fitted one with probability
    C(x+k-1, x) C(m-x+n_fit-k, m-x) / C(n_fit+m, m)."""
    for k, n, m in [(1, 1, 7), (3, 20, 15), (8, 160, 200), (40, 50, 9)]:
        pmf = cal.heldout_pmf(k, n, m)
        exact = [math.comb(x + k - 1, x) * math.comb(m - x + n - k, m - x) / math.comb(n + m, m) for x in range(m + 1)]
        assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(pmf, exact, rtol=1e-9, atol=1e-15)
    # k = 1 of n_fit = 1: the new scores' count below one fitted score is uniform on 0..m
    np.testing.assert_allclose(cal.heldout_pmf(1, 1, 9), np.full(10, 0.1), rtol=1e-12)
    # a wrong parameterisation (Beta(k, n_fit - k), the quantile's naive spread) is told apart
    from scipy.stats import betabinom

    assert np.abs(cal.heldout_pmf(3, 20, 15) - betabinom(15, 3, 17).pmf(np.arange(16))).max() > 1e-3


def test_heldout_pmf_matches_a_simulation() -> None:
    """Bar stated up front: every count's simulated frequency within 4.5 binomial standard errors of the pmf
    (21 cells: a correct pmf fails with probability < 2e-4)."""
    k, n, m, reps = 2, 30, 20, 40_000
    rng = np.random.default_rng(7)
    fit, new = rng.random((reps, n)), rng.random((reps, m))
    counts = (new < np.sort(fit, axis=1)[:, k - 1:k]).sum(axis=1)
    freq = np.bincount(counts, minlength=m + 1) / reps
    pmf = cal.heldout_pmf(k, n, m)
    assert np.all(np.abs(freq - pmf) <= 4.5 * np.sqrt(pmf * (1 - pmf) / reps) + 1e-12)


def test_predictive_interval_tails() -> None:
    for k, n, m in [(8, 160, 200), (1, 19, 50), (18, 180, 180), (5, 5, 3)]:
        lo, hi = cal.predictive_interval(k, n, m)
        cdf = np.cumsum(cal.heldout_pmf(k, n, m))
        below = cdf[lo - 1] if lo > 0 else 0.0
        assert below <= 0.025 and 1 - cdf[hi] <= 0.025 + 1e-12  # each tail outside holds at most 2.5%
        assert cdf[lo] > 0.025 and (hi == 0 or 1 - cdf[hi - 1] > 0.025)  # and it is the narrowest such interval
    assert cal.predictive_interval(8, 160, 0) == (0, 0)


def test_a_fit_set_too_small_for_the_fpr_is_refused_with_its_minimum() -> None:
    assert cal.min_fit(0.05) == 19 and cal.order_statistic(19, 0.05) == 1 and cal.order_statistic(18, 0.05) == 0
    with pytest.raises(ConfigError, match="needs at least 19 clean fitting images .* got 18"):
        cal.threshold_at_fpr(np.linspace(0, 1, 18), 0.05)
    assert cal.threshold_at_fpr(np.linspace(0, 1, 19), 0.05) == 0.0  # the smallest of 19: k = 1
    with pytest.raises(ValueError, match="need 1 <= k <= n_fit"):
        cal.heldout_pmf(0, 10, 5)

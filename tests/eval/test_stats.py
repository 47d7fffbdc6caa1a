"""Confidence intervals and paired comparisons (medvl.eval.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from medvl.eval import (
    Comparison,
    Interval,
    align_by_id,
    bootstrap_ci,
    paired_bootstrap,
    paired_wilcoxon,
    proportion_ci,
)


def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


# --- proportion_ci -------------------------------------------------------------------------


def test_wilson_textbook_value():
    # 8/10 at 95%: Wilson score interval 0.490 to 0.943 (Newcombe 1998, Altman et al.).
    ci = proportion_ci(8, 10)
    assert ci.estimate == pytest.approx(0.8)
    assert (ci.low, ci.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert (ci.method, ci.n) == ("wilson", 10)


def test_wilson_closed_form():
    k, n, z = 37, 120, sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    ci = proportion_ci(k, n)
    assert (ci.low, ci.high) == pytest.approx((centre - half, centre + half), rel=1e-9)


def test_clopper_pearson_matches_scipy_and_beta_quantiles():
    ci = proportion_ci(3, 25, confidence=0.9, method="exact")
    ref = sps.binomtest(3, 25).proportion_ci(confidence_level=0.9, method="exact")
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    # Clopper-Pearson from beta quantiles.
    assert ci.low == pytest.approx(sps.beta.ppf(0.05, 3, 23))
    assert ci.high == pytest.approx(sps.beta.ppf(0.95, 4, 22))
    edge = proportion_ci(0, 10, method="exact")
    assert edge.low == 0.0 and edge.high == pytest.approx(1 - 0.025 ** (1 / 10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"successes": 1, "n": 0}, "n must be at least 1"),
        ({"successes": 11, "n": 10}, "successes must be in"),
        ({"successes": 1, "n": 10, "method": "wald"}, "method must be"),
        ({"successes": 1, "n": 10, "confidence": 95}, "confidence"),
    ],
)
def test_proportion_ci_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        proportion_ci(**kwargs)


# --- bootstrap_ci ---------------------------------------------------------------------------


def test_bootstrap_ci_covers_true_mean_in_simulation():
    rng = np.random.default_rng(123)
    covered = 0
    trials = 60
    for t in range(trials):
        sample = rng.normal(loc=0.7, scale=0.1, size=60)
        ci = bootstrap_ci(sample, n_resamples=500, seed=t)
        covered += ci.low <= 0.7 <= ci.high
    # Nominal 95%; the percentile interval under-covers a little at n=60.
    assert covered / trials >= 0.85


def test_bootstrap_ci_is_deterministic_for_a_seed():
    values = np.random.default_rng(0).random(80)
    first = bootstrap_ci(values, seed=7, n_resamples=500)
    assert bootstrap_ci(values, seed=7, n_resamples=500) == first
    assert bootstrap_ci(values, seed=8, n_resamples=500) != first
    bca = bootstrap_ci(values, seed=7, n_resamples=500, method="bca")
    assert bca.method == "bootstrap bca"
    assert bca.low < float(np.mean(values)) < bca.high


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_degenerate_input_is_zero_width(method):
    with np.errstate(all="raise"):
        ci = bootstrap_ci([0.9] * 20, method=method)
    assert ci.estimate == pytest.approx(0.9)
    assert ci.low == ci.high == ci.estimate
    single = bootstrap_ci([0.3, math.nan])
    assert (single.low, single.high, single.n) == (0.3, 0.3, 1)


def test_bootstrap_ci_drops_nan_and_reports_n():
    ci = bootstrap_ci([1.0, math.nan, 0.0, 1.0, None, 1.0], n_resamples=200)
    assert ci.n == 4
    assert ci.estimate == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([math.nan, math.nan])


# --- paired_bootstrap -----------------------------------------------------------------------


def test_paired_bootstrap_clear_difference_small_p():
    rng = np.random.default_rng(1)
    base = rng.random(200)
    better = base + 0.05 + rng.normal(0, 0.05, 200)
    res = paired_bootstrap(better, base, n_resamples=1000, seed=3)
    assert res.difference == pytest.approx(float(np.mean(better - base)))
    assert res.low > 0
    assert res.p_value <= 2 / 1001 + 1e-12
    assert (res.method, res.n) == ("paired bootstrap", 200)


def test_paired_bootstrap_no_difference_large_p():
    rng = np.random.default_rng(2)
    base = rng.random(200)
    noisy = base + rng.normal(0, 0.05, 200)  # same mean, per-sample noise
    res = paired_bootstrap(noisy, base, n_resamples=1000, seed=3)
    assert res.low < 0 < res.high
    assert res.p_value > 0.2
    identical = paired_bootstrap(base, base, n_resamples=200)
    assert (identical.difference, identical.p_value) == (0.0, 1.0)


def test_paired_bootstrap_median_and_determinism():
    rng = np.random.default_rng(4)
    a, b = rng.random(60), rng.random(60)
    first = paired_bootstrap(a, b, statistic=np.median, n_resamples=300, seed=5)
    assert first == paired_bootstrap(a, b, statistic=np.median, n_resamples=300, seed=5)
    assert first.difference == pytest.approx(float(np.median(a) - np.median(b)))
    assert first.low <= first.difference <= first.high


def test_paired_inputs_drop_nan_pairs_and_check_lengths():
    a = [0.9, math.nan, 0.8, 0.7, 0.6]
    b = [0.5, 0.4, None, 0.3, 0.2]
    res = paired_bootstrap(a, b, n_resamples=200)
    assert res.n == 3
    assert res.difference == pytest.approx(0.4)
    assert paired_wilcoxon(a, b).n == 3
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1.0, 2.0], [1.0])


# --- paired_wilcoxon ------------------------------------------------------------------------


def test_paired_wilcoxon_all_zero_differences():
    dice_scores = [0.8, 0.9, 0.75, 0.6]
    res = paired_wilcoxon(dice_scores, list(dice_scores))
    assert (res.difference, res.p_value, res.n) == (0.0, 1.0, 4)
    assert math.isnan(res.low) and math.isnan(res.high)


def test_paired_wilcoxon_matches_scipy():
    rng = np.random.default_rng(9)
    a = rng.random(30)
    b = a - rng.normal(0.05, 0.05, 30)
    res = paired_wilcoxon(a, b)
    assert res.p_value == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert res.difference == pytest.approx(float(np.median(a - b)))
    assert res.p_value < 0.01


# --- align_by_id ----------------------------------------------------------------------------


def test_align_by_id_pairs_values_in_a_order():
    a, b = align_by_id({"s1": 1.0, "s2": True, "s3": None}, {"s3": 0.5, "s1": 0.0, "s2": 1})
    np.testing.assert_array_equal(a, [1.0, 1.0, np.nan])
    np.testing.assert_array_equal(b, [0.0, 1.0, 0.5])


def test_align_by_id_strict_error_names_missing_counts():
    pred_a = {"s1": 1, "s2": 0, "s3": 1, "s4": 1}
    pred_b = {"s1": 1, "s2": 1, "s9": 0}
    with pytest.raises(ValueError) as err:
        align_by_id(pred_a, pred_b)
    msg = str(err.value)
    assert "1 ids missing from pred_a" in msg and "'s9'" in msg
    assert "2 ids missing from pred_b" in msg and "'s3'" in msg
    assert "2 ids in common" in msg
    a, b = align_by_id(pred_a, pred_b, strict=False)
    np.testing.assert_array_equal(a, [1, 0])
    np.testing.assert_array_equal(b, [1, 1])
    with pytest.raises(ValueError, match="no ids in common"):
        align_by_id({"x": 1}, {"y": 1}, strict=False)


# --- formatting -----------------------------------------------------------------------------


def test_str_formats():
    assert str(Interval(0.8123, 0.7741, 0.8462, "wilson", 400)) == (
        "0.812 [0.774, 0.846] (wilson, n=400)"
    )
    assert str(Comparison(0.031, 0.004, 0.058, 0.024, "mcnemar exact", 400)) == (
        "Δ +0.031 [0.004, 0.058], p=0.024 (mcnemar exact, n=400)"
    )
    assert str(Comparison(-0.02, math.nan, math.nan, 0.0001, "wilcoxon", 50)) == (
        "Δ -0.020, p<0.001 (wilcoxon, n=50)"
    )
    assert str(proportion_ci(8, 10)) == "0.800 [0.490, 0.943] (wilson, n=10)"

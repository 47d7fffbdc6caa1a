"""medvl.eval.paired_proportions: McNemar's test and Newcombe's interval, against hand values."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from medvl.eval import mcnemar


def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


def test_mcnemar_exact_hand_value():
    # b=10, c=2: two-sided exact p = 2 * P(X <= 2 | 12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    a, b = _pairs(10, 2, 300, 88)
    res = mcnemar(a, b)
    assert res.method == "mcnemar exact"
    assert res.p_value == pytest.approx(158 / 4096)
    assert res.difference == pytest.approx(8 / 400)
    assert res.n == 400


def test_mcnemar_chi_square_hand_value():
    a, b = _pairs(10, 2, 300, 88)
    forced = mcnemar(a, b, exact=False)
    # (|10 - 2| - 1)^2 / 12 = 49 / 12 on 1 df.
    assert forced.method == "mcnemar chi2"
    assert forced.p_value == pytest.approx(sps.chi2.sf(49 / 12, 1))
    assert forced.p_value == pytest.approx(0.04331, abs=1e-5)
    # 30 vs 10 discordant pairs: chi-square chosen automatically, (20 - 1)^2 / 40.
    a, b = _pairs(30, 10, 100, 60)
    auto = mcnemar(a, b)
    assert auto.method == "mcnemar chi2"
    assert auto.p_value == pytest.approx(sps.chi2.sf(361 / 40, 1))
    assert mcnemar(a, b, exact=True).p_value == pytest.approx(sps.binomtest(30, 40, 0.5).pvalue)


def test_mcnemar_no_discordant_pairs_and_bad_values():
    a, b = _pairs(0, 0, 40, 10)
    res = mcnemar(a, b)
    assert (res.difference, res.p_value) == (0.0, 1.0)
    assert res.low < 0 < res.high
    with pytest.raises(ValueError, match="True/False"):
        mcnemar([0.5, 1.0], [1.0, 0.0])


def test_mcnemar_newcombe_interval():
    # Large n: Newcombe's interval is close to the Wald interval for paired proportions.
    a, b = _pairs(300, 200, 3000, 1500)
    n, d = 5000, 100 / 5000
    se = math.sqrt((300 + 200) - 100**2 / n) / n
    res = mcnemar(a, b)
    z = sps.norm.ppf(0.975)
    assert res.low == pytest.approx(d - z * se, abs=2e-3)
    assert res.high == pytest.approx(d + z * se, abs=2e-3)
    # Small n, extreme accuracy: stays in [-1, 1] and holds the estimate.
    small = mcnemar(*_pairs(5, 0, 0, 0))
    assert -1 <= small.low < small.difference == 1.0 and small.high == pytest.approx(1.0)

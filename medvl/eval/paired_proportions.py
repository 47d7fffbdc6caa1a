"""McNemar's test of two models' correctness on the same samples, with Newcombe's interval for
the difference in accuracy (scipy has neither as such); the results type is `medvl.eval.stats`'s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps

from medvl.eval.stats import Comparison, _check_confidence, _paired

__all__ = ["mcnemar"]

# McNemar: below this many discordant pairs the chi-square approximation is poor, so the exact
# binomial test is used (the usual rule of thumb, e.g. Fagerland et al. 2013 discuss it).
_EXACT_BELOW = 25


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _newcombe_paired(
    both: int, only_a: int, only_b: int, neither: int, confidence: float
) -> tuple[float, float]:
    """Newcombe's (1998, Stat Med 17:2635, method 10) hybrid score interval for p_A - p_B.

    scipy has no interval for a difference of paired proportions. Method 10 combines the Wilson
    intervals of the two marginal accuracies with the correlation of the pairs (phi, with
    Newcombe's continuity adjustment of AD - BC); unlike the Wald interval it stays in [-1, 1]
    and keeps its coverage for small samples and accuracies near 0 or 1.
    """
    n = both + only_a + only_b + neither
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = _wilson(both + only_a, n, confidence)
    l2, u2 = _wilson(both + only_b, n, confidence)
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    if denom == 0:
        phi = 0.0
    else:
        if cross > n / 2:
            adjusted = cross - n / 2
        elif cross < 0:
            adjusted = cross
        else:
            adjusted = 0.0
        phi = adjusted / math.sqrt(denom)
    delta = p1 - p2
    low = delta - math.sqrt(
        max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0)
    )
    high = delta + math.sqrt(
        max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0)
    )
    return max(low, -1.0), min(high, 1.0)


def mcnemar(
    correct_a: Any, correct_b: Any, exact: bool | None = None, confidence: float = 0.95
) -> Comparison:
    """McNemar's test of two models' paired correctness, with the difference in accuracy.

    Only the discordant pairs carry information: ``b`` samples that A got right and B wrong,
    ``c`` the other way round. Under "equal accuracy" ``b ~ Binomial(b + c, 1/2)``.

    * exact (the default when ``b + c < 25``): two-sided exact binomial test,
      ``scipy.stats.binomtest(b, b + c, 0.5)``; method ``"mcnemar exact"``.
    * otherwise: chi-square with continuity correction, ``(|b - c| - 1)^2 / (b + c)`` on 1 degree
      of freedom (``scipy.stats.chi2.sf``; scipy has no McNemar test, so the statistic is
      written here); method ``"mcnemar chi2"``.
    * no discordant pairs: p = 1.

    The difference is ``accuracy(A) - accuracy(B) = (b - c) / n`` and its interval is
    Newcombe's hybrid score interval for paired proportions (method 10 of Newcombe 1998).

    Args:
        correct_a: Per-sample correctness of model A (bools or 0/1; NaN/None pairs dropped).
        correct_b: Per-sample correctness of model B on the same samples.
        exact: Force the exact test (True) or the chi-square one (False); None chooses.
        confidence: Confidence level of the interval.

    Raises:
        ValueError: For inputs of different lengths, values other than 0/1, or no pairs.
    """
    _check_confidence(confidence)
    x, y = _paired(correct_a, correct_b)
    for name, arr in (("correct_a", x), ("correct_b", y)):
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"mcnemar: {name} must hold only True/False (or 0/1)")
    n = int(x.size)
    if n == 0:
        raise ValueError("mcnemar: no pairs (after dropping pairs with NaN)")
    xa, yb = x.astype(bool), y.astype(bool)
    both, neither = int(np.sum(xa & yb)), int(np.sum(~xa & ~yb))
    only_a, only_b = int(np.sum(xa & ~yb)), int(np.sum(~xa & yb))
    discordant = only_a + only_b
    use_exact = discordant < _EXACT_BELOW if exact is None else bool(exact)
    if discordant == 0:
        p = 1.0
    elif use_exact:
        p = float(sps.binomtest(only_a, discordant, 0.5).pvalue)
    else:
        chi2 = (abs(only_a - only_b) - 1) ** 2 / discordant
        p = float(sps.chi2.sf(chi2, df=1))
    low, high = _newcombe_paired(both, only_a, only_b, neither, confidence)
    method = "mcnemar exact" if use_exact else "mcnemar chi2"
    return Comparison((only_a - only_b) / n, low, high, min(p, 1.0), method, n, confidence)

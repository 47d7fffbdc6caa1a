"""Confidence intervals and paired comparisons of models scored on the same samples.

scipy does the statistics wherever it has the method; each function says which scipy call it
rests on, and the few formulas written here say why scipy could not be used.

==========================  =================================================================
function                    method
==========================  =================================================================
:func:`proportion_ci`       Wilson score or Clopper-Pearson ("exact"):
                            ``scipy.stats.binomtest(k, n).proportion_ci``
:func:`bootstrap_ci`        ``scipy.stats.bootstrap`` (percentile or BCa)
:func:`paired_bootstrap`    ``scipy.stats.bootstrap(paired=True)``; two-sided p from the
                            bootstrap distribution of the difference
:func:`mcnemar`             in `medvl.eval.paired_proportions`: exact binomial test on
                            the discordant pairs (``scipy.stats.binomtest``) or chi-square
                            with continuity correction; Newcombe's hybrid score interval for
                            the difference in accuracy (both written there: scipy has neither)
:func:`paired_wilcoxon`     ``scipy.stats.wilcoxon`` (signed-rank) on per-sample metrics
:func:`align_by_id`         per-id predictions of two models -> two aligned arrays
==========================  =================================================================

Missing values, one rule for every function here: inputs are 1-D lists or arrays of bool, int
or float; ``NaN`` (and ``None``) marks a missing score and is dropped — for paired functions the
whole pair is dropped when either side is missing — and the ``n`` of the result is the number of
samples (pairs) actually used. ``inf`` is a value, not a missing one (an HD95 against an empty
mask is ``inf``, see :mod:`medvl.eval.metrics`): summarise such metrics with a rank statistic
(:func:`paired_wilcoxon`, or ``statistic=np.median``), since a mean with an ``inf`` is ``inf``.

Results are the frozen dataclasses :class:`Interval` and :class:`Comparison`; ``str()`` gives
the line for a report: ``0.812 [0.774, 0.846] (wilson, n=400)`` and
``Δ +0.031 [0.004, 0.058], p=0.024 (mcnemar exact, n=400)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "Comparison",
    "Interval",
    "align_by_id",
    "bootstrap_ci",
    "paired_bootstrap",
    "paired_wilcoxon",
    "proportion_ci",
]

def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "p=nan"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval.

    Attributes:
        estimate: The point estimate (a proportion, a mean, ...).
        low: Lower confidence limit.
        high: Upper confidence limit.
        method: How the interval was computed (``wilson``, ``exact``, ``bootstrap percentile``,
            ``bootstrap bca``).
        n: Number of samples used (after dropping missing values).
        confidence: The confidence level, e.g. 0.95.
    """

    estimate: float
    low: float
    high: float
    method: str
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.brief()} ({self.method}, n={self.n})"

    def brief(self) -> str:
        """``estimate [low, high]`` to three decimals, as a table cell shows it."""
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of model A against model B on the same samples.

    Attributes:
        difference: A minus B (of the statistic, the accuracy, or the median paired difference,
            as the producing function says).
        low: Lower confidence limit of the difference (``nan`` where the method gives none).
        high: Upper confidence limit of the difference (``nan`` where the method gives none).
        p_value: Two-sided p-value for "no difference".
        method: The test, e.g. ``mcnemar exact``, ``mcnemar chi2``, ``paired bootstrap``,
            ``wilcoxon``.
        n: Number of pairs used (after dropping pairs with a missing value).
        confidence: The confidence level of ``low``/``high``.
    """

    difference: float
    low: float
    high: float
    p_value: float
    method: str
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        interval = ""
        if not (math.isnan(self.low) or math.isnan(self.high)):
            interval = f" [{self.low:.3f}, {self.high:.3f}]"
        return (
            f"Δ {self.difference:+.3f}{interval}, {_fmt_p(self.p_value)} "
            f"({self.method}, n={self.n})"
        )


# ---------------------------------------------------------------------------------------------
# input handling


def _as_1d(values: Any, name: str) -> np.ndarray:
    """A 1-D float array; bools become 0/1, ``None`` becomes NaN."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers or bools") from err
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    return arr


def _drop_nan(values: Any, name: str = "values") -> np.ndarray:
    arr = _as_1d(values, name)
    return arr[~np.isnan(arr)]


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long 1-D arrays without the pairs where either side is NaN."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(
            f"paired inputs must have the same length, got {x.size} and {y.size} "
            "(use align_by_id to pair predictions by sample id)"
        )
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# ---------------------------------------------------------------------------------------------
# intervals


def proportion_ci(
    successes: int, n: int, confidence: float = 0.95, method: str = "wilson"
) -> Interval:
    """Confidence interval for a proportion (e.g. an accuracy, a sensitivity).

    Both methods are scipy's ``binomtest(successes, n).proportion_ci``: ``"wilson"`` is the
    Wilson score interval (without continuity correction; good coverage, never leaves [0, 1],
    the usual choice), ``"exact"`` is Clopper-Pearson (guaranteed coverage, conservative).

    Args:
        successes: Number of successes, ``0 <= successes <= n``.
        n: Number of trials, ``n >= 1``.
        confidence: Confidence level.
        method: ``"wilson"`` or ``"exact"``.

    Raises:
        ValueError: For ``n < 1``, successes outside [0, n], or an unknown method.
    """
    _check_confidence(confidence)
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    k, total = int(successes), int(n)
    if k != successes or total != n:
        raise ValueError(f"successes and n must be integers, got {successes} and {n}")
    if total < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= k <= total:
        raise ValueError(f"successes must be in [0, n={total}], got {k}")
    ci = sps.binomtest(k, total).proportion_ci(confidence_level=confidence, method=method)
    return Interval(k / total, float(ci.low), float(ci.high), method, total, confidence)


def bootstrap_ci(
    values: Any,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Bootstrap confidence interval of a statistic of per-sample values.

    The resampling and the interval are ``scipy.stats.bootstrap``'s.

    Args:
        values: Per-sample scores (NaN dropped).
        statistic: A function of a 1-D array; one that takes ``axis=`` (as numpy's do) is
            vectorised by scipy, anything else is called once per resample.
        confidence: Confidence level.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the resampling; the same seed gives the same interval.
        method: ``"percentile"`` or ``"bca"`` (bias-corrected and accelerated).

    Returns:
        The statistic of the values and its interval. When every value is equal (or there is
        only one) every resample gives the same statistic: the interval has zero width, where
        scipy would warn and return NaN for BCa.

    Raises:
        ValueError: For no values left after dropping NaN, or an unknown method.
    """
    _check_confidence(confidence)
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    x = _drop_nan(values)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values (after dropping NaN)")
    estimate = float(statistic(x))
    label = f"bootstrap {method}"
    if x.size == 1 or np.all(x == x[0]):
        return Interval(estimate, estimate, estimate, label, int(x.size), confidence)
    res = sps.bootstrap(
        (x,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), label, int(x.size), confidence)


# ---------------------------------------------------------------------------------------------
# paired comparisons


def paired_bootstrap(
    a: Any,
    b: Any,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Difference ``statistic(a) - statistic(b)`` of two models' per-sample scores, bootstrapped.

    The samples (pairs) are resampled together (``scipy.stats.bootstrap(paired=True)``), so the
    correlation between the models on the same cases is kept. The interval is the percentile
    interval of the bootstrap distribution of the difference. The two-sided p-value is read from
    that same distribution (the percentile-inversion p-value)::

        p = min(1, 2 * min((1 + #{d* <= 0}) / (B + 1), (1 + #{d* >= 0}) / (B + 1)))

    where ``d*`` are the ``B`` bootstrap differences: roughly the smallest ``1 - confidence`` at
    which the percentile interval would exclude 0, with the +1 so that it is never 0 (its floor is
    ``2 / (B + 1)``; raise ``n_resamples`` for smaller p-values).

    Args:
        a: Per-sample scores of model A (NaN pairs dropped).
        b: Per-sample scores of model B on the same samples, in the same order.
        statistic: A function of a 1-D array (``np.mean``, ``np.median``, ...).
        confidence: Confidence level.
        n_resamples: Number of bootstrap resamples ``B``.
        seed: Seed of the resampling.

    Raises:
        ValueError: For inputs of different lengths, or fewer than one pair left.
    """
    _check_confidence(confidence)
    x, y = _paired(a, b)
    n = int(x.size)
    if n == 0:
        raise ValueError("paired_bootstrap: no pairs (after dropping pairs with NaN)")
    difference = float(statistic(x) - statistic(y))
    if n == 1 or (np.all(x == x[0]) and np.all(y == y[0])):
        # Every resample is the sample itself: the difference is known exactly.
        p = 1.0 if difference == 0 else 2.0 / (n_resamples + 1)
        return Comparison(difference, difference, difference, min(p, 1.0),
                          "paired bootstrap", n, confidence)  # fmt: skip

    def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(statistic(u, axis=axis)) - np.asarray(statistic(v, axis=axis))

    def diff_1d(u: np.ndarray, v: np.ndarray) -> float:
        return float(statistic(u) - statistic(v))

    try:
        statistic(x[:2][None, :], axis=-1)
        stat_fn, vectorized = diff, True
    except TypeError:
        stat_fn, vectorized = diff_1d, False
    res = sps.bootstrap(
        (x, y),
        stat_fn,
        paired=True,
        vectorized=vectorized,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    boot = dist.size
    p = 2.0 * min((1 + np.sum(dist <= 0)) / (boot + 1), (1 + np.sum(dist >= 0)) / (boot + 1))
    ci = res.confidence_interval
    return Comparison(difference, float(ci.low), float(ci.high), float(min(p, 1.0)),
                      "paired bootstrap", n, confidence)  # fmt: skip


def paired_wilcoxon(a: Any, b: Any) -> Comparison:
    """Wilcoxon signed-rank test of paired continuous metrics (Dice, IoU, HD95, ...).

    ``scipy.stats.wilcoxon(a, b)`` with its defaults (zero differences dropped, the exact null
    distribution for small samples, the normal approximation otherwise). When every difference
    is zero the models are indistinguishable on these samples: p = 1 (scipy would warn and
    return NaN).

    Returns:
        A :class:`Comparison` whose ``difference`` is the median of the paired differences
        ``a - b``; it has no interval (``low``/``high`` are NaN; use :func:`paired_bootstrap`
        with ``statistic=np.median`` for one).

    Raises:
        ValueError: For inputs of different lengths, or no pairs.
    """
    x, y = _paired(a, b)
    n = int(x.size)
    if n == 0:
        raise ValueError("paired_wilcoxon: no pairs (after dropping pairs with NaN)")
    d = x - y
    median = float(np.median(d))
    p = 1.0 if np.all(d == 0) else float(sps.wilcoxon(x, y).pvalue)
    return Comparison(median, math.nan, math.nan, p, "wilcoxon", n)


def align_by_id(
    pred_a: Mapping[Hashable, Any], pred_b: Mapping[Hashable, Any], strict: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Pair two models' per-sample values by sample id.

    Args:
        pred_a: Sample id -> value (score, correctness) for model A.
        pred_b: The same for model B.
        strict: Require both to hold exactly the same ids (the default: a comparison on a
            silently smaller set is easy to misreport). False keeps the common ids.

    Returns:
        Two float arrays over the common ids, in ``pred_a``'s order. ``None`` values become NaN,
        which the functions here drop pair-wise.

    Raises:
        ValueError: With ``strict``, when the ids differ: how many are missing from each side,
            with a few examples; also when there are no common ids.
    """
    ids = [k for k in pred_a if k in pred_b]
    if strict and (len(ids) != len(pred_a) or len(ids) != len(pred_b)):
        only_a = [k for k in pred_a if k not in pred_b]
        only_b = [k for k in pred_b if k not in pred_a]
        raise ValueError(
            f"align_by_id: {len(only_b)} ids missing from pred_a{_examples(only_b)} and "
            f"{len(only_a)} ids missing from pred_b{_examples(only_a)}; "
            f"{len(ids)} ids in common (pass strict=False to compare on those)"
        )
    if not ids:
        raise ValueError("align_by_id: the two predictions have no ids in common")
    a = np.array([np.nan if pred_a[k] is None else pred_a[k] for k in ids], dtype=float)
    b = np.array([np.nan if pred_b[k] is None else pred_b[k] for k in ids], dtype=float)
    return a, b


def _examples(ids: list[Hashable], k: int = 3) -> str:
    if not ids:
        return ""
    shown = ", ".join(repr(i) for i in ids[:k])
    return f" (e.g. {shown}{', ...' if len(ids) > k else ''})"

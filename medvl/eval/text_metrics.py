"""The text metrics of the field for open answers and severity grades.

* **BLEU** (sacrebleu's sentence BLEU, lowercased, in [0, 1]) and **ROUGE-L** (rouge-score's
  F-measure) for open answers, as VQA-RAD / SLAKE / PathVQA reports give them;
* **findings sets**: a list answer ("meniscal tear, joint effusion") compared as a set of
  normalised findings, so the order of the list does not matter (`findings`, `same_findings`);
* **severity**: `severity_error` counts an unreadable grade at the worst error the scale allows
  (``max(true, max_grade - true)``), so a model cannot lower its mean error by refusing;
  `worst_grade` is the grade that stands in for an unreadable one in `quadratic_kappa`
  (Cohen's kappa with quadratic weights, scikit-learn's).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from medvl.eval.extract import extract_grade, normalize_text

__all__ = [
    "bleu",
    "findings",
    "quadratic_kappa",
    "rouge_l",
    "same_findings",
    "severity_error",
    "worst_grade",
]

# List separators of a findings answer: commas, semicolons, slashes, new lines, "and", "&".
_SEPARATORS = re.compile(r"\s*(?:[,;/\n]|\band\b|&)\s*", re.I)


def bleu(pred: Any, ref: Any) -> float:
    """Sentence BLEU of an open answer against its reference, lowercased, in [0, 1].

    sacrebleu's ``sentence_bleu`` with its default 13a tokenizer and exponential smoothing;
    an empty prediction scores 0.
    """
    import sacrebleu

    pred, ref = str(pred or "").strip(), str(ref or "").strip()
    if not pred or not ref:
        return float(pred == ref)
    return sacrebleu.sentence_bleu(pred, [ref], lowercase=True).score / 100.0


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(pred: Any, ref: Any) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens) of an open answer, in [0, 1]."""
    pred, ref = str(pred or "").strip(), str(ref or "").strip()
    if not pred or not ref:
        return float(pred == ref)
    return float(_rouge().score(ref, pred)["rougeL"].fmeasure)


def findings(text: Any) -> frozenset[str]:
    """The normalised items of a list answer: split on commas, semicolons, slashes, new lines
    and "and", each item normalised (:func:`medvl.eval.extract.normalize_text`)."""
    if not isinstance(text, str):
        return frozenset()
    items = (normalize_text(part) for part in _SEPARATORS.split(text))
    return frozenset(item for item in items if item)


def same_findings(pred: Any, ref: Any) -> bool:
    """Whether two list answers name the same findings in any order (False when either is
    empty)."""
    mine, theirs = findings(pred), findings(ref)
    return bool(mine) and mine == theirs


def worst_grade(true: int, max_grade: int) -> int:
    """The grade farthest from ``true`` on a 0..``max_grade`` scale (ties: the top)."""
    return 0 if true > max_grade - true else max_grade


def severity_error(pred: Any, true: Any, max_grade: int | None) -> float | None:
    """Absolute grade error, an unreadable or out-of-scale reply counted at the worst error.

    Args:
        pred: The answer text (read with :func:`medvl.eval.extract.extract_grade`, grades above
            ``max_grade`` unreadable) or an int grade.
        true: The reference grade.
        max_grade: The top of the scale; None leaves an unreadable reply's error None.

    Returns:
        ``|grade - true|``, or ``|worst_grade(true) - true|`` when no grade is read; None when
        no grade is read and the scale is unknown.
    """
    true = int(str(true).strip())
    grade = pred if isinstance(pred, int) and not isinstance(pred, bool) else None
    if grade is None:
        grade = extract_grade(pred, max_grade=max_grade) if isinstance(pred, str) else None
    if grade is not None and max_grade is not None and grade > max_grade:
        grade = None
    if grade is None:
        if max_grade is None:
            return None
        grade = worst_grade(true, max_grade)
    return float(abs(grade - true))


def quadratic_kappa(pred: Sequence[int], true: Sequence[int], max_grade: int) -> float:
    """Cohen's kappa with quadratic weights over grades 0..``max_grade`` (scikit-learn).

    Put `worst_grade` in ``pred`` for unreadable replies. Returns NaN for fewer than two rows or
    when both raters use one grade only (kappa is undefined).
    """
    from sklearn.metrics import cohen_kappa_score

    if len(pred) != len(true):
        raise ValueError(f"quadratic_kappa: {len(pred)} predictions for {len(true)} grades")
    if len(pred) < 2 or len(set(pred) | set(true)) < 2:
        return float("nan")
    return float(cohen_kappa_score(list(true), list(pred), weights="quadratic",
                                   labels=list(range(max_grade + 1))))  # fmt: skip

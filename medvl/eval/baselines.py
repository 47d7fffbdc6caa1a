"""What a model that never looks at the scan can score: chance, the answer prior, the mean box.

A claim that a model reads scans needs these beside it. Each is computed from samples alone:

* `chance_accuracy`: a uniform guess among the possible answers (``1 / len(options)`` for
  choice, 1/2 for yes/no, ``1 / grades`` for severity);
* `prior_accuracy`: the most common training answer per answer type and anatomy, the best a
  model can do from the question's kind alone;
* `fit_mean_box` / `mean_box_ious`: one constant box per question (else per modality) and box
  size, fitted on the training split, scored on the test split like a model's boxes.

Example:
    >>> train = [{"answer_type": "closed", "anatomy": "knee", "answer": "yes"}] * 3
    >>> test = [{"answer_type": "closed", "anatomy": "knee", "answer": "no"}]
    >>> chance_accuracy(test), prior_accuracy(train, test)
    ({'closed': 0.5}, {'closed': 0.0})
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medvl.eval.metrics import box_iou

__all__ = ["chance_accuracy", "fit_mean_box", "mean_box_ious", "prior_accuracy"]

SCORED_TYPES = ("choice", "closed", "severity")
"""Answer types with a small closed set of answers, for which chance is defined."""


def _get(sample: Any, name: str) -> Any:
    return sample.get(name) if isinstance(sample, Mapping) else getattr(sample, name, None)


def _answer(sample: Any) -> str:
    kind = _get(sample, "answer_type")
    if kind == "severity" and _get(sample, "severity") is not None:
        return str(_get(sample, "severity"))
    text = str(_get(sample, "answer")).strip()
    return text.upper() if kind == "choice" else text.lower()


def chance_accuracy(samples: Iterable[Any]) -> dict[str, float]:
    """Expected accuracy of a uniform random guess, per answer type (choice, closed, severity).

    Severity grades count as the distinct grades seen for that anatomy among ``samples``
    (a 0-3 scale observed in full gives 1/4).
    """
    samples = [s for s in samples if _get(s, "answer_type") in SCORED_TYPES]
    grades: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if _get(s, "answer_type") == "severity":
            grades[str(_get(s, "anatomy"))].add(_answer(s))
    rates: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        kind = _get(s, "answer_type")
        if kind == "choice":
            rates[kind].append(1 / len(_get(s, "options") or "ABCD"))
        elif kind == "closed":
            rates[kind].append(0.5)
        else:
            rates[kind].append(1 / len(grades[str(_get(s, "anatomy"))]))
    return {k: float(np.mean(v)) for k, v in sorted(rates.items())}


def prior_accuracy(train: Iterable[Any], test: Iterable[Any]) -> dict[str, float]:
    """Accuracy on ``test`` of the most common ``train`` answer for each (answer type, anatomy).

    Ties go to the answer that sorts first. A (type, anatomy) pair unseen in training scores 0.
    """
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for s in train:
        if _get(s, "answer_type") in SCORED_TYPES:
            counts[(_get(s, "answer_type"), str(_get(s, "anatomy")))][_answer(s)] += 1
    prior = {k: min(c, key=lambda a: (-c[a], a)) for k, c in counts.items()}
    hits: dict[str, list[bool]] = defaultdict(list)
    for s in test:
        kind = _get(s, "answer_type")
        if kind in SCORED_TYPES:
            hits[kind].append(prior.get((kind, str(_get(s, "anatomy")))) == _answer(s))
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}


def fit_mean_box(train: Iterable[Any]) -> dict[tuple[str, int, str], list[float]]:
    """The mean training box of each (modality, box length, question): the "mean box" baseline.

    Keyed by the question too, because the question names the target ("Locate the heart"): a
    model that never looks at the scan still knows where hearts usually are. The modality's mean
    over all questions is kept under the question ``""`` for questions unseen in training.

    Returns:
        ``{(modality, 4 or 6, question): box}`` over the samples that have a box.
    """
    boxes: dict[tuple[str, int, str], list[Sequence[float]]] = defaultdict(list)
    for s in train:
        box = _get(s, "box")
        if box is not None:
            modality = str(_get(s, "modality"))
            boxes[(modality, len(box), str(_get(s, "question")))].append(box)
            boxes[(modality, len(box), "")].append(box)
    return {k: np.mean(np.asarray(v, float), axis=0).tolist() for k, v in boxes.items()}


def mean_box_ious(
    boxes: Mapping[tuple[str, int, str], Sequence[float]], test: Iterable[Any]
) -> dict[str, float]:
    """IoU of the fitted mean box with each boxed test sample's box, by sample id.

    The sample's question's mean box is used, else its modality's; a sample whose (modality,
    box length) had no training box scores 0, as a model that gives no box does.
    """
    out = {}
    for s in test:
        box = _get(s, "box")
        if box is None:
            continue
        modality = str(_get(s, "modality"))
        mean = boxes.get((modality, len(box), str(_get(s, "question"))))
        mean = mean if mean is not None else boxes.get((modality, len(box), ""))
        out[str(_get(s, "id"))] = 0.0 if mean is None else box_iou(mean, box)
    return out

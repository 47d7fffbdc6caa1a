"""Metrics for one prediction: answer correctness, token F1, box IoU, mask overlap, HD95.

The overlap metrics are MONAI's (``monai.data.box_utils.box_iou`` through
:func:`medvl.scans.boxes.paired_box_iou`, ``monai.metrics.compute_dice``, ``compute_iou``,
``compute_hausdorff_distance``); this module fixes their inputs (plain lists, numpy arrays or
torch tensors, 2D or 3D) and the cases MONAI leaves open.

Empty masks, one rule for every function here:

==========================  ======  ========  =========
case                        Dice    mask IoU  HD95
==========================  ======  ========  =========
both masks empty            1.0     1.0       0.0
one empty, the other not    0.0     0.0       ``inf``
==========================  ======  ========  =========

HD95 is ``inf`` rather than ``nan`` when one mask is empty: there is no surface to measure to,
the prediction is as wrong as it can be, ``inf`` sorts last and ``math.isinf`` finds it, while a
``nan`` would silently drop out of ``np.nanmean``. Average HD95 with that in mind (a median, or
a mean over the cases where both masks are non-empty, reported with the count).

Rewards (:mod:`medvl.train.rewards`) are built on these functions, so training and evaluation
score the same way.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medvl.eval.extract import (
    extract_choice,
    extract_choices,
    extract_grade,
    extract_yes_no,
    normalize_text,
)
from medvl.eval.normalize import strip_answer_cue, unbox
from medvl.eval.text_metrics import same_findings
from medvl.scans.boxes import paired_box_iou

__all__ = [
    "answer_correct",
    "box_iou",
    "dice",
    "hd95",
    "mask_iou",
    "severity_abs_error",
    "token_f1",
]


def reference_letters(answer: Any) -> frozenset[str]:
    """The option letters of a choice reference: ``"B"`` -> {B}, ``"B,E,F"`` -> {B, E, F}."""
    return frozenset(m.upper() for m in re.findall(r"(?<![A-Za-z])([A-Za-z])(?![A-Za-z])",
                                                   str(answer)))  # fmt: skip


def answer_correct(
    prediction_text: Any,
    answer: Any,
    answer_type: str,
    options: Mapping[str, str] | None = None,
    question: str | None = None,
) -> bool | None:
    """Whether a reply's answer is the reference answer.

    Args:
        prediction_text: The model's answer text (the ``<answer>`` part of the reply).
        answer: The reference, as in ``Sample.answer``: a letter, ``yes``/``no``, free text or
            a grade (int or string).
        answer_type: ``choice`` (the letter read by :func:`extract_choice` equals the answer),
            — for a reference of several letters (``"B,E,F"``) the set
            :func:`extract_choices` reads equals it —, ``closed`` (:func:`extract_yes_no`
            equals it), ``open`` (exact match after
            :func:`normalize_text`, or the same findings in another order:
            :func:`medvl.eval.text_metrics.same_findings`), ``severity``
            (:func:`extract_grade` equals it exactly) or
            ``grounding`` (None: score boxes with :func:`box_iou`).
        options: The choice options, so that a reply may give an option's text.
        question: The question, for closed answers whose yes/no depends on it ("Normal" to
            "Is there any abnormality?" is no; see :func:`extract_yes_no`).

    Returns:
        True or False; None for grounding. An unreadable reply is False.

    Raises:
        ValueError: For an unknown ``answer_type``.
    """
    if answer_type == "grounding":
        return None
    if answer_type == "choice":
        truth = reference_letters(answer)
        if len(truth) > 1:  # several right options: the reply must give exactly that set
            return extract_choices(prediction_text, options) == truth
        letter = extract_choice(prediction_text, options)
        return letter is not None and letter == str(answer).strip().upper()
    if answer_type == "closed":
        said = extract_yes_no(prediction_text, question)
        return said is not None and said == str(answer).strip().lower()
    if answer_type == "open":
        prediction_text = strip_answer_cue(unbox(prediction_text))
        said = normalize_text(prediction_text)
        if said != "" and said == normalize_text(str(answer)):
            return True
        return same_findings(prediction_text, str(answer))  # a list in another order
    if answer_type == "severity":
        grade = extract_grade(prediction_text)
        return grade is not None and str(grade) == str(answer).strip()
    raise ValueError(
        f"answer_type must be one of choice, closed, open, grounding, severity; got {answer_type!r}"
    )


def token_f1(pred: Any, ref: Any) -> float:
    """SQuAD token F1 of an open answer: the harmonic mean of token precision and recall.

    Both texts are normalised with :func:`medvl.eval.extract.normalize_text` and split on
    whitespace; tokens are counted with multiplicity.

    Args:
        pred: The predicted answer text.
        ref: The reference answer text.

    Returns:
        F1 in [0, 1]: 1.0 when both are empty after normalisation, 0.0 when only one is.
    """
    p, r = normalize_text(pred).split(), normalize_text(ref).split()
    if not p or not r:
        return float(p == r)
    common: dict[str, int] = {}
    for token in set(p):
        common[token] = min(p.count(token), r.count(token))
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


def box_iou(pred: Sequence[float], true: Sequence[float]) -> float:
    """IoU of two normalised boxes, 2D ``[x1, y1, x2, y2]`` or 3D ``[x1, y1, z1, x2, y2, z2]``.

    MONAI's ``box_iou`` through :func:`medvl.scans.boxes.paired_box_iou`, which scales the
    boxes by 100 first: MONAI adds a fixed float32 epsilon to the union, which would otherwise
    dent the IoU of small normalised 3D boxes.

    Args:
        pred: The predicted box, min corner first (a list, tuple, array or tensor).
        true: The reference box, same length.

    Returns:
        IoU in [0, 1] (0.0 for disjoint boxes or a box without area).

    Raises:
        ValueError: Unless both boxes have 4 or both have 6 finite numbers, min corner first.
    """
    p = torch.as_tensor(np.asarray(pred, dtype=np.float64)).reshape(-1)
    t = torch.as_tensor(np.asarray(true, dtype=np.float64)).reshape(-1)
    if p.numel() != t.numel() or p.numel() not in (4, 6):
        raise ValueError(f"boxes must both have 4 or both 6 numbers, got {list(pred)} and {true}")
    half = p.numel() // 2
    for box in (p, t):
        if not torch.isfinite(box).all() or (box[:half] > box[half:]).any():
            raise ValueError(f"expected a finite box, min corner first, got {box.tolist()}")
    return float(paired_box_iou(p[None], t[None])[0].clamp(0.0, 1.0))


def _binary(mask: Any) -> torch.Tensor:
    if isinstance(mask, torch.Tensor):
        tensor = mask.detach().cpu()
    else:
        tensor = torch.as_tensor(np.asarray(mask))
    return tensor.bool()


def _pair(pred: Any, true: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both masks as boolean tensors of one shape (2D or 3D), nonzero = foreground."""
    p, t = _binary(pred), _binary(true)
    if p.shape != t.shape:
        raise ValueError(f"masks must have one shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {tuple(p.shape)}")
    return p, t


def _batched(mask: torch.Tensor) -> torch.Tensor:
    return mask.float()[None, None]  # MONAI's (batch, channel, *spatial)


def _overlap(compute: Any, pred: Any, true: Any) -> float:
    """A MONAI overlap metric of two masks; two empty masks agree perfectly (1.0)."""
    p, t = _pair(pred, true)
    if not p.any() and not t.any():
        return 1.0
    return float(compute(_batched(p), _batched(t), ignore_empty=False)[0, 0])


def dice(pred: Any, true: Any) -> float:
    """Dice overlap ``2|P∩T| / (|P| + |T|)`` of two binary masks (MONAI ``compute_dice``).

    Args:
        pred: Predicted mask, 2D or 3D, numpy or torch; nonzero is foreground.
        true: Reference mask of the same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both are empty, 0.0 when one is (module docstring).

    Raises:
        ValueError: For masks of different shapes or not 2D/3D.
    """
    from monai.metrics import compute_dice

    return _overlap(compute_dice, pred, true)


def mask_iou(pred: Any, true: Any) -> float:
    """Jaccard overlap ``|P∩T| / |P∪T|`` of two binary masks (MONAI ``compute_iou``).

    Args:
        pred: Predicted mask, 2D or 3D, numpy or torch; nonzero is foreground.
        true: Reference mask of the same shape.

    Returns:
        IoU in [0, 1]; 1.0 when both are empty, 0.0 when one is (module docstring).

    Raises:
        ValueError: For masks of different shapes or not 2D/3D.
    """
    from monai.metrics import compute_iou

    return _overlap(compute_iou, pred, true)


def hd95(pred: Any, true: Any, spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks' surfaces, in mm.

    MONAI ``compute_hausdorff_distance(percentile=95)``: for each direction, the 95th
    percentile of the distances from one mask's surface voxels to the other's surface, and the
    larger of the two directions.

    Args:
        pred: Predicted mask, 2D or 3D, numpy or torch; nonzero is foreground.
        true: Reference mask of the same shape.
        spacing: Voxel size along each array axis (one number for all axes, or one per axis),
            in mm; None means 1 per axis, so the result is in voxels.

    Returns:
        HD95 >= 0; 0.0 when both masks are empty, ``inf`` when exactly one is (see the module
        docstring for why not ``nan``).

    Raises:
        ValueError: For masks of different shapes or not 2D/3D, or a spacing of the wrong
            length or not positive.
    """
    from monai.metrics import compute_hausdorff_distance

    p, t = _pair(pred, true)
    if spacing is not None:
        values = [float(spacing)] * p.ndim if np.ndim(spacing) == 0 else list(spacing)
        values = [float(v) for v in values]
        if len(values) != p.ndim or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"spacing must be {p.ndim} positive numbers, got {spacing!r}")
        spacing = values
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return math.inf
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call
        warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
        distance = compute_hausdorff_distance(
            _batched(p), _batched(t), include_background=True, percentile=95, spacing=spacing
        )
    return float(distance[0, 0])


def severity_abs_error(pred: Any, true: Any) -> float | None:
    """Absolute error of a severity grade, ``|pred - true|``.

    Args:
        pred: The predicted grade: an int, or answer text read with :func:`extract_grade`.
        true: The reference grade (int or its string).

    Returns:
        The absolute difference as a float; None when ``pred`` is None or unreadable.

    Raises:
        ValueError: When ``true`` is not an integer grade.
    """
    if isinstance(pred, str):
        pred = extract_grade(pred)
    if pred is None or isinstance(pred, bool):
        return None
    try:
        reference = int(str(true).strip())
    except ValueError:
        raise ValueError(f"the reference grade must be an integer, got {true!r}") from None
    return float(abs(int(pred) - reference))

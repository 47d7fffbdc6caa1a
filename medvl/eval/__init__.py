"""medvl.eval: scoring a model's answers.

Public API::

    extract_choice(text, options) -> "B" | None        # medvl.eval.extract, never raise
    extract_yes_no(text) -> "yes" | "no" | None
    extract_grade(text, max_grade=None) -> int | None
    normalize_text(text) -> str                        # SQuAD v1.1 normalisation
    answer_correct(prediction_text, answer, answer_type, options=None) -> bool | None
    token_f1(pred, ref) -> float                       # medvl.eval.metrics
    box_iou(pred, true) -> float                       # 2D or 3D normalised boxes
    dice(pred, true), mask_iou(pred, true), hd95(pred, true, spacing=None) -> float
    severity_abs_error(pred, true) -> float | None

The runner, statistics and reports are planned.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from medvl.eval.extract import extract_choice, extract_grade, extract_yes_no, normalize_text

# The metrics import torch and MONAI: resolved on first use, so extraction stays light.
_LAZY = {
    name: "medvl.eval.metrics"
    for name in (
        "answer_correct", "box_iou", "dice", "hd95", "mask_iou", "severity_abs_error", "token_f1"
    )
}  # fmt: skip

if TYPE_CHECKING:
    from medvl.eval.metrics import (
        answer_correct,
        box_iou,
        dice,
        hd95,
        mask_iou,
        severity_abs_error,
        token_f1,
    )


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medvl.eval' has no attribute {name!r}")


__all__ = [
    "answer_correct",
    "box_iou",
    "dice",
    "extract_choice",
    "extract_grade",
    "extract_yes_no",
    "hd95",
    "mask_iou",
    "normalize_text",
    "severity_abs_error",
    "token_f1",
]

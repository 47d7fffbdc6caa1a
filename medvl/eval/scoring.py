"""Scoring one answer against its Sample: the metric keys of a prediction line.

`score` gives correctness and the per-sample metrics (the keys are listed in
:mod:`medvl.eval.runner`'s docstring, the Prediction contract); `reasoning_row` the
``reasoning_*`` keys of :mod:`medvl.eval.reasoning`. The runner writes both into each line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["ACC_IOU", "reasoning_row", "score"]

logger = logging.getLogger(__name__)

ACC_IOU = 0.5  # a box counts as found from this IoU (Acc@0.5)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _reference_mask(sample: Any, root: Path) -> tuple[Any, Any]:
    """The sample's mask as a bool tensor (spatial axes only) and its spacing in mm, or
    (None, None); the spacing is None for a picture file (PNG/JPG), whose unit spacing is
    pixels, not millimetres."""
    from medvl.scans import load_scan

    path = sample.mask_path(root)
    if path is None:
        return None, None
    mask = load_scan(path)
    values = mask[0] if mask.ndim in (3, 4) else mask
    label = sample.meta.get("mask_label")
    binary = (values == float(label)) if label is not None else (values != 0)
    spacing = getattr(mask, "meta", {}).get("spacing")
    try:
        spacing = [float(s) for s in spacing][: binary.ndim] if spacing is not None else None
    except TypeError:
        spacing = None
    if spacing is not None and len(spacing) != binary.ndim:
        spacing = None
    if Path(path).suffix.lower() in PICTURE_SUFFIXES:
        spacing = None
    return binary.as_tensor() if hasattr(binary, "as_tensor") else binary, spacing


def score(sample: Any, answer: Any, root: Path) -> dict[str, Any]:
    """Per-sample correctness and metrics of one `Answer` (the keys of the module docstring)."""
    import torch

    from medvl.eval.extract import extract_grade, is_hedge, says_both
    from medvl.eval.metrics import (
        answer_correct,
        box_iou,
        dice,
        hd95,
        token_f1,
    )
    from medvl.eval.text_metrics import bleu, rouge_l, same_findings, severity_error
    from medvl.model.prompts import severity_scale_for

    text = answer.answer
    out: dict[str, Any] = {
        "correct": answer_correct(
            text, sample.answer, sample.answer_type, sample.options, sample.question
        ),
        "iou": None, "dice": None, "hd95": None, "severity_abs_error": None, "token_f1": None,
        "severity_grade": None, "severity_max_grade": None, "bleu": None, "rouge_l": None,
        "same_findings": None, "hd95_px": None, "mask_missing": None, "evidence_iou": None,
        "grounded_correct": None,
        # A hedge ("A or B", "yes/no") is recorded as one, and scored wrong above.
        "hedged": (is_hedge(text, sample.options) if sample.answer_type == "choice"
                   else says_both(text) if sample.answer_type == "closed" else None),
    }  # fmt: skip
    if sample.box is not None:
        try:
            iou = 0.0 if answer.box is None else box_iou(answer.box, sample.box)
        except ValueError:  # a 2D box for a volume, an inverted box...
            iou = 0.0
        if sample.answer_type == "grounding":
            out["iou"], out["correct"] = iou, iou >= ACC_IOU  # Acc@0.5
        else:  # the box is the answer's evidence: right answer, right region?
            out["evidence_iou"] = iou
            out["grounded_correct"] = bool(out["correct"]) and iou >= ACC_IOU
    if sample.mask is not None and sample.answer_type == "grounding":
        out["mask_missing"] = answer.mask is None
    if sample.mask is not None and (answer.mask is not None or out["mask_missing"]):
        true, spacing = _reference_mask(sample, root)
        pred = answer.mask if answer.mask is not None else torch.zeros_like(true)
        unit = "hd95" if spacing is not None else "hd95_px"  # mm, or pixels without spacing
        if tuple(pred.shape) == tuple(true.shape):
            out["dice"] = dice(pred, true)
            out[unit] = hd95(pred, true, spacing=spacing)
        else:
            logger.warning(
                "%s: predicted mask %s and reference %s differ in shape; no dice/hd95",
                sample.id, tuple(pred.shape), tuple(true.shape),
            )  # fmt: skip
    if sample.answer_type == "severity":
        reference = sample.severity if sample.severity is not None else sample.answer
        scale = severity_scale_for(sample)
        top = sample.meta.get("max_grade")  # the Sample's own scale, else its modality's
        if not isinstance(top, int) or isinstance(top, bool):
            top = None if scale is None else scale.high
        out["severity_grade"] = extract_grade(text, max_grade=top)
        out["severity_max_grade"] = top
        out["severity_abs_error"] = severity_error(text or "", reference, top)
    if sample.answer_type == "open":
        out["token_f1"] = token_f1(text or "", sample.answer)
        out["bleu"] = bleu(text, sample.answer)
        out["rouge_l"] = rouge_l(text, sample.answer)
        out["same_findings"] = same_findings(text, sample.answer)
    return out


def reasoning_row(sample: Any, row: dict[str, Any], asked: bool, matcher: Any) -> dict[str, Any]:
    """The ``reasoning_*`` keys of one prediction line (None where not scored)."""
    from medvl.eval.reasoning import ROW_KEYS, score_reasoning

    if matcher is None or not sample.reasoning or not (asked or row["reasoning"]):
        return dict.fromkeys(ROW_KEYS)
    return score_reasoning(
        row["reasoning"], sample.reasoning, matcher, answer=row["answer"],
        answer_type=sample.answer_type, options=sample.options, tokens=row["tokens"],
        seconds=row["latency_s"],
    ).as_row()  # fmt: skip

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
    proportion_ci(successes, n, confidence=0.95, method="wilson") -> Interval  # medvl.eval.stats
    bootstrap_ci(values, statistic=np.mean, ...) -> Interval
    paired_bootstrap(a, b, ...), mcnemar(correct_a, correct_b), paired_wilcoxon(a, b) -> Comparison
    align_by_id(pred_a, pred_b, strict=True) -> (a, b)   # per-id predictions -> aligned arrays
    EvalConfig.from_yaml(path, overrides) -> EvalConfig          # medvl.eval.runner
    evaluate(config, model=None) -> predictions JSONL path       # batched, appended, resumable
    run_eval(config_path, overrides) -> predictions path         # what `medvl eval` calls
    read_predictions(path, repair=False) -> list[dict]        # medvl.eval.predictions
    summarize(path_or_rows) -> dict
    make_report(prediction_files, out_dir, names=None) -> Path  # medvl.eval.report: report.md,
                                                       # summary.json, PNG plots; bad records
                                                       # raise PredictionFileError (file:line)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvl._lazy import lazy_getattr
from medvl.eval.extract import extract_choice, extract_grade, extract_yes_no, normalize_text

# The metrics import torch and MONAI: resolved on first use, so extraction stays light.
_LAZY = {
    name: "medvl.eval.metrics"
    for name in (
        "answer_correct", "box_iou", "dice", "hd95", "mask_iou", "severity_abs_error", "token_f1"
    )
}  # fmt: skip
# The statistics import scipy: resolved on first use as well.
_LAZY.update(
    {
        name: "medvl.eval.stats"
        for name in (
            "Comparison", "Interval", "align_by_id", "bootstrap_ci",
            "paired_bootstrap", "paired_wilcoxon", "proportion_ci",
        )
    }
)  # fmt: skip
_LAZY.update({"mcnemar": "medvl.eval.paired_proportions"})
# The report imports scipy and (when writing) matplotlib: resolved on first use as well.
_LAZY.update({"make_report": "medvl.eval.report"})
_LAZY.update({"PredictionFileError": "medvl.eval.predictions"})
_LAZY.update({"read_predictions": "medvl.eval.predictions"})

# The runner imports the model stack (torch, transformers) only when it runs.
_LAZY.update(
    {name: "medvl.eval.runner" for name in ("EvalConfig", "evaluate", "run_eval", "summarize")}
)

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
    from medvl.eval.paired_proportions import mcnemar
    from medvl.eval.predictions import PredictionFileError, read_predictions
    from medvl.eval.report import make_report
    from medvl.eval.runner import EvalConfig, evaluate, run_eval, summarize
    from medvl.eval.stats import (
        Comparison,
        Interval,
        align_by_id,
        bootstrap_ci,
        paired_bootstrap,
        paired_wilcoxon,
        proportion_ci,
    )


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "Comparison",
    "EvalConfig",
    "Interval",
    "PredictionFileError",
    "align_by_id",
    "answer_correct",
    "bootstrap_ci",
    "box_iou",
    "dice",
    "evaluate",
    "extract_choice",
    "extract_grade",
    "extract_yes_no",
    "hd95",
    "make_report",
    "mask_iou",
    "mcnemar",
    "normalize_text",
    "paired_bootstrap",
    "paired_wilcoxon",
    "proportion_ci",
    "read_predictions",
    "run_eval",
    "severity_abs_error",
    "summarize",
    "token_f1",
]

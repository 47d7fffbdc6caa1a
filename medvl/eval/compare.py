"""Two runs side by side on the samples both answered: what ``medvl compare RUN_A RUN_B`` prints.

Each run's accuracy (Wilson 95% CI), mean IoU and reasoning F1 (bootstrap 95% CI) over the
common ids, then B − A: McNemar's test with Newcombe's CI for accuracy and a paired bootstrap
for IoU and reasoning F1 (:mod:`medvl.eval.report`'s numbers, so the report and this agree).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from medvl.eval.predictions import read_predictions
from medvl.eval.report import REQUIRED_KEYS, summarize_models

__all__ = ["compare_runs"]


def _ci(cell: dict | None) -> str:
    if not cell or not cell.get("n"):
        return "-"
    return f"{cell['estimate']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] (n={cell['n']})"


def _delta(cell: dict | None) -> str:
    if cell is None:
        return "-"
    ci = "" if math.isnan(cell["low"]) else f" [{cell['low']:+.3f}, {cell['high']:+.3f}]"
    p = cell["p_value"]
    p_text = "-" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")
    return f"{cell['difference']:+.3f}{ci}, p={p_text} ({cell['method']}, n={cell['n']})"


def compare_runs(
    run_a: str | os.PathLike, run_b: str | os.PathLike, names: Sequence[str] | None = None
) -> str:
    """The comparison of two prediction files (or run folders holding ``predictions.jsonl``)
    on their common sample ids, as text.

    Raises:
        medvl.eval.predictions.PredictionFileError: A file is missing or damaged.
        ValueError: The runs share no sample id.
    """
    paths = []
    for run in (run_a, run_b):
        path = Path(run)
        paths.append(path / "predictions.jsonl" if path.is_dir() else path)
    rows = [read_predictions(p, required=REQUIRED_KEYS) for p in paths]
    common = {str(r["id"]) for r in rows[0]} & {str(r["id"]) for r in rows[1]}
    if not common:
        raise ValueError(f"{paths[0]} and {paths[1]} share no sample id: nothing to compare")
    labels = list(names) if names else [str(p) for p in paths]
    if labels[0] == labels[1]:
        labels = [f"A: {labels[0]}", f"B: {labels[1]}"]
    kept = {lab: [r for r in rs if str(r["id"]) in common]
            for lab, rs in zip(labels, rows, strict=True)}  # fmt: skip
    summary = summarize_models(kept)
    (cmp,) = summary["comparisons"]
    lines = [f"{len(common)} common samples ({len(rows[0])} in A, {len(rows[1])} in B)", ""]
    for label in labels:
        m = summary["models"][label]
        lines.append(f"{label}")
        lines.append(f"  accuracy      {_ci(m['accuracy'])}")
        lines.append(f"  IoU mean      {_ci(m['iou'])}")
        lines.append(f"  reasoning F1  {_ci(m['reasoning_f1'])}")
    lines += ["", f"B − A ({labels[1]} − {labels[0]})"]
    lines.append(f"  accuracy      {_delta(cmp['accuracy'])}")
    lines.append(f"  IoU mean      {_delta(cmp['iou'])}")
    lines.append(f"  reasoning F1  {_delta(cmp['reasoning_f1'])}")
    return "\n".join(lines)

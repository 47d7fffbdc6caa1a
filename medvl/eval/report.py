"""Reports of one or more models' prediction files: Markdown tables, a JSON summary, PNG plots.

Input: the runner's prediction JSONL files (the **Prediction** contract), one model per file.
Output in ``out_dir``::

    report.md                    tables (GitHub/notebook Markdown), plots embedded by relative path
    report.html                  the same, self-contained, with each model's worst cases drawn
    summary.json                 every number in the report (and a few more)
    accuracy_by_answer_type.png  grouped bars with Wilson 95% CI error bars, one bar per model
    accuracy_by_modality.png     the same per modality
    iou.png                      box plot of per-sample IoU per model (only when a file has IoU)
    dice.png                     the same for Dice (only when a file has Dice)
    reasoning_length.png         reply length of right and wrong answers (rows with reasoning)

Per model: accuracy overall, per ``answer_type`` and per ``modality`` (Wilson 95% CI over the
samples with ``correct`` not null); mean IoU / Dice / token F1 / severity error with bootstrap
95% CIs; HD95 median in mm and, for masks without physical spacing, in pixels (``inf`` when a
mask was missed, see :mod:`medvl.eval.metrics`; grounding rows without a predicted mask count as
Dice 0 and are listed, but a model that gave no mask at all gets no Dice or HD95, "—"); grounded
accuracy (right answer *and* its evidence box at IoU >= 0.5) beside the accuracy of the same
rows; BLEU and
ROUGE-L of open answers and the share naming the same findings in any order; severity
quadratic-weighted kappa per scale (:mod:`medvl.eval.text_metrics`); format rate
(``well_formed``); mean latency and tokens; reasoning quality (:mod:`medvl.eval.reasoning`:
step recall, precision, F1, order, matched steps per 100 tokens with bootstrap CIs, the share of
reasonings whose conclusion is the answer with a Wilson CI, and F1 for right and wrong answers).
With two or more models every other model is
compared with the first on the sample ids they share: McNemar for correctness, paired bootstrap
for IoU and reasoning F1; Δ is *model − first model*, ``n`` is the number of pairs used.

All statistics are :mod:`medvl.eval.stats`'s; bootstraps are seeded (same input, same report).
Every file is written to a temporary file and renamed (``os.replace``), ``report.md`` last, so a
crash leaves the previous report or none, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medvl._io import atomic_write_bytes
from medvl.eval.paired_proportions import mcnemar
from medvl.eval.plots import accuracy_bars, iou_boxplot, length_by_correctness, overlap_boxplot
from medvl.eval.predictions import PredictionFileError, read_predictions
from medvl.eval.report_html import render_html
from medvl.eval.report_markdown import render_markdown
from medvl.eval.stats import (
    Comparison,
    Interval,
    align_by_id,
    bootstrap_ci,
    paired_bootstrap,
    proportion_ci,
)

__all__ = ["make_report", "summarize_models"]

REQUIRED_KEYS = ("id", "model", "correct", "answer_type")
# Per-sample metrics summarised by their mean with a bootstrap CI (when present).
MEAN_METRICS = (
    "iou",
    "dice",
    "token_f1",
    "bleu",
    "rouge_l",
    "severity_abs_error",
    "reasoning_recall",
    "reasoning_precision",
    "reasoning_f1",
    "reasoning_order",
    "reasoning_per_100_tokens",
)
# Per-sample means compared between models by a paired bootstrap on the common ids.
PAIRED_MEANS = ("iou", "reasoning_f1")
# Reasoning F1 split by whether the answer was right: reasoning that supports the answer.
REASONING_BY_CORRECT = "reasoning_f1_by_correct"
SEED = 0
N_RESAMPLES = 2000


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


# ---------------------------------------------------------------------------------------------
# numbers


def _numbers(records: Iterable[dict], key: str) -> np.ndarray:
    """Float values of ``key`` where present and numeric (booleans count as 0/1)."""
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (bool, int, float)):
            out.append(float(v))
    arr = np.asarray(out, dtype=float)
    return arr[~np.isnan(arr)]


def _interval(iv: Interval) -> dict[str, Any]:
    return asdict(iv)


def _proportion(records: Sequence[dict], key: str = "correct") -> dict[str, Any] | None:
    values = [r.get(key) for r in records if isinstance(r.get(key), bool)]
    if not values:
        return None
    k = int(sum(values))
    return {**_interval(proportion_ci(k, len(values))), "successes": k}


def _grouped_accuracy(records: Sequence[dict], key: str) -> dict[str, Any]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(str(r.get(key) or "unknown"), []).append(r)
    out = {}
    for name in sorted(groups):
        acc = _proportion(groups[name])
        out[name] = acc if acc is not None else {"n": 0, "samples": len(groups[name])}
    return out


def _severity_kappa(records: Sequence[dict]) -> dict[str, Any]:
    """Quadratic-weighted kappa per severity scale (by its top grade); an unreadable grade
    counts as the grade farthest from the truth (`medvl.eval.text_metrics.worst_grade`)."""
    from medvl.eval.text_metrics import quadratic_kappa, worst_grade

    scales: dict[int, tuple[list[int], list[int]]] = {}
    for r in records:
        top = r.get("severity_max_grade")
        if r.get("answer_type") != "severity" or not isinstance(top, int):
            continue
        try:
            true = int(str(r.get("reference")).strip())
        except ValueError:
            continue
        grade = r.get("severity_grade")
        pred, truth = scales.setdefault(top, ([], []))
        pred.append(grade if isinstance(grade, int) else worst_grade(true, top))
        truth.append(true)
    return {
        str(top): {"kappa": quadratic_kappa(p, t, top), "n": len(t)}
        for top, (p, t) in sorted(scales.items())
    }


def _model_summary(records: Sequence[dict], source: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"file": source, "samples": len(records)}
    summary["accuracy"] = _proportion(records)
    summary["accuracy_by_answer_type"] = _grouped_accuracy(records, "answer_type")
    summary["accuracy_by_modality"] = _grouped_accuracy(records, "modality")
    for metric in MEAN_METRICS:
        values = _numbers(records, metric)
        if values.size and np.all(np.isfinite(values)):
            summary[metric] = _interval(bootstrap_ci(values, n_resamples=N_RESAMPLES, seed=SEED))
        elif values.size:  # an inf makes the mean meaningless: report the median instead
            summary[metric] = {"median": float(np.median(values)), "n": int(values.size)}
        else:
            summary[metric] = None
    for key in ("hd95", "hd95_px"):
        hd = _numbers(records, key)
        summary[key] = {"median": float(np.median(hd)), "n": int(hd.size)} if hd.size else None
    summary["masks_missing"] = sorted(str(r["id"]) for r in records if r.get("mask_missing"))
    asked = [r for r in records if r.get("mask_missing") is not None]
    summary["masks_predicted"] = bool(asked) and not all(r["mask_missing"] for r in asked)
    if asked and not summary["masks_predicted"]:
        # No mask at all (a model without a mask head): Dice 0 and HD95 inf on every row would
        # read as a failed segmentation; there is none to score.
        summary["dice"] = summary["hd95"] = summary["hd95_px"] = None
    grounded = [r for r in records if isinstance(r.get("grounded_correct"), bool)]
    summary["grounded_accuracy"] = _proportion(grounded, "grounded_correct")
    summary["accuracy_where_grounded"] = _proportion(grounded, "correct")
    summary["format_rate"] = _proportion(records, "well_formed")
    summary["same_findings"] = _proportion(records, "same_findings")
    summary["hedged"] = _proportion(records, "hedged")
    summary["unreadable"] = {str(r["id"]): str(r["error"]) for r in records if r.get("error")}
    summary["accuracy_by_modality_and_type"] = {
        modality: _grouped_accuracy([r for r in records
                                     if str(r.get("modality") or "unknown") == modality],
                                    "answer_type")
        for modality in summary["accuracy_by_modality"]
    }  # fmt: skip
    summary["severity_kappa"] = _severity_kappa(records)
    summary["reasoning_consistent"] = _proportion(records, "reasoning_consistent")
    summary[REASONING_BY_CORRECT] = {}
    for label, want in (("right", True), ("wrong", False)):
        values = _numbers([r for r in records if r.get("correct") is want], "reasoning_f1")
        summary[REASONING_BY_CORRECT][label] = (
            _interval(bootstrap_ci(values, n_resamples=N_RESAMPLES, seed=SEED))
            if values.size else None
        )  # fmt: skip
    for key in ("latency_s", "tokens"):
        values = _numbers(records, key)
        summary[key] = (
            {"mean": float(values.mean()), "n": int(values.size)} if values.size else None
        )
    return summary


def _comparison(cmp: Comparison) -> dict[str, Any]:
    return asdict(cmp)


def _compare(ref: Sequence[dict], other: Sequence[dict]) -> dict[str, Any]:
    """``other`` against ``ref`` on their common ids (Δ = other − ref)."""
    ref_ids = {_hashable(r["id"]) for r in ref}
    common = sum(1 for r in other if _hashable(r["id"]) in ref_ids)
    out: dict[str, Any] = {"common_ids": common, "accuracy": None,
                           **dict.fromkeys(PAIRED_MEANS)}  # fmt: skip
    if not common:
        return out

    def by_id(records: Sequence[dict], key: str) -> dict[Any, Any]:
        vals = {}
        for r in records:
            v = r.get(key)
            ok = isinstance(v, bool) if key == "correct" else isinstance(v, (int, float))
            vals[_hashable(r["id"])] = float(v) if ok and v is not None else None
        return vals

    a, b = align_by_id(by_id(other, "correct"), by_id(ref, "correct"), strict=False)
    if np.any(~(np.isnan(a) | np.isnan(b))):
        out["accuracy"] = _comparison(mcnemar(a, b))
    for metric in PAIRED_MEANS:
        a, b = align_by_id(by_id(other, metric), by_id(ref, metric), strict=False)
        if np.any(~(np.isnan(a) | np.isnan(b))):
            out[metric] = _comparison(paired_bootstrap(a, b, n_resamples=N_RESAMPLES, seed=SEED))
    return out


def summarize_models(
    models: dict[str, Sequence[dict]], sources: dict[str, str] | None = None
) -> dict:
    """All the report's numbers for ``{model name: prediction records}`` (first = reference)."""
    if not models:
        raise ValueError("summarize_models: no models")
    sources = sources or {}
    names = list(models)
    summary: dict[str, Any] = {
        "model_order": names,
        "reference_model": names[0],
        "models": {n: _model_summary(models[n], sources.get(n, "")) for n in names},
        "comparisons": [
            {"model": n, "reference": names[0], **_compare(models[names[0]], models[n])}
            for n in names[1:]
        ],
        "settings": {"confidence": 0.95, "bootstrap_resamples": N_RESAMPLES, "seed": SEED},
    }
    return summary


# ---------------------------------------------------------------------------------------------
# writing


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _scan_root(path: Path, image_root: str | os.PathLike | None) -> Path | None:
    """Where a prediction file's ``image`` paths are relative to: ``image_root``, else the
    folder of the manifest named in the run's ``<file>.config.yaml``, else None."""
    if image_root is not None:
        return Path(image_root)
    config = path.with_name(path.name + ".config.yaml")
    if not config.is_file():
        return None
    import yaml

    try:
        manifest = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("manifest")
    except yaml.YAMLError:
        return None
    return Path(manifest).parent if manifest else None


def make_report(
    prediction_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    gallery: int = 8,
    image_root: str | os.PathLike | None = None,
) -> Path:
    """Write ``report.md``, ``report.html``, ``summary.json`` and PNG plots.

    ``report.html`` is self-contained (plots and scans inlined): the Markdown report, then per
    model a gallery of its ``gallery`` worst cases (`medvl.eval.gallery`) with the scan, the
    predicted and the true box, the question, the reasoning, the answer and the reference.

    Args:
        prediction_files: One runner JSONL file per model; the first is the reference of the
            paired comparisons.
        out_dir: Output folder (created).
        names: Display names, one per file; default each file's ``model`` label.
        gallery: Worst cases shown per model (0: no gallery).
        image_root: The folder the rows' ``image`` paths are relative to; default the
            manifest's folder from each file's ``.config.yaml`` (written by `evaluate`).

    Returns:
        The path of ``report.md``.

    Raises:
        PredictionFileError: For an unreadable file or record (file and line named).
        ValueError: For no files, ``names`` of the wrong length, a file mixing model labels
            without a name given, or two models with the same name.
    """
    files = [Path(p) for p in prediction_files]
    if not files:
        raise ValueError("make_report: no prediction files")
    if names is not None and len(names) != len(files):
        raise ValueError(f"make_report: {len(names)} names for {len(files)} prediction files")
    models: dict[str, list[dict]] = {}
    sources: dict[str, str] = {}
    for i, path in enumerate(files):
        if not path.is_file():
            raise PredictionFileError(f"{path}: no such prediction file")
        records = read_predictions(path, required=REQUIRED_KEYS)
        if not records:
            raise PredictionFileError(f"{path}: no predictions")
        if names is not None:
            name = str(names[i])
        else:
            labels = sorted({str(r["model"]) for r in records})
            if len(labels) > 1:
                raise ValueError(
                    f"{path}: holds several model labels ({', '.join(labels)}); pass names="
                )
            name = labels[0]
        if name in models:
            raise ValueError(
                f"make_report: model name {name!r} used twice ({sources[name]} and {path}); "
                "pass names= to tell them apart"
            )
        models[name] = records
        sources[name] = str(path)
    summary = summarize_models(models, sources)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {
        "accuracy_by_answer_type": accuracy_bars(
            summary, "accuracy_by_answer_type", "Accuracy by answer type", "answer type"
        ),
        "accuracy_by_modality": accuracy_bars(
            summary, "accuracy_by_modality", "Accuracy by modality", "modality"
        ),
        "iou": iou_boxplot({n: _numbers(recs, "iou") for n, recs in models.items()}),
        "dice": overlap_boxplot({n: _numbers(recs, "dice") for n, recs in models.items()
                                 if summary["models"][n]["dice"] is not None}, "Dice"),
        "reasoning_length": length_by_correctness({
            n: tuple(_numbers([r for r in recs if r.get("correct") is ok
                               and r.get("reasoning") is not None], "tokens")
                     for ok in (True, False))
            for n, recs in models.items()
        }),
    }  # fmt: skip
    plots = {}
    for key, data in images.items():
        if data is not None:
            atomic_write_bytes(out / f"{key}.png", data)
            plots[key] = f"{key}.png"
    summary["plots"] = plots
    text = json.dumps(_jsonable(summary), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode("utf-8"))
    markdown = render_markdown(summary, plots)
    galleries = {}
    if gallery > 0:
        from medvl.eval.gallery import gallery_html

        for n, path in zip(models, files, strict=True):
            galleries[n] = gallery_html(models[n], _scan_root(path, image_root), gallery)
    images_bytes = {name: data for name, data in images.items() if data is not None}
    page = render_html(markdown, {plots[k]: v for k, v in images_bytes.items()}, galleries)
    atomic_write_bytes(out / "report.html", page.encode("utf-8"))
    report = out / "report.md"
    atomic_write_bytes(report, markdown.encode("utf-8"))
    return report

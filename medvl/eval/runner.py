"""The batched, resumable evaluation runner: a model's answers to a manifest, one JSON line each.

::

    config = EvalConfig.from_yaml("configs/eval_tiny.yaml", ["--batch_size", "4"])
    predictions = evaluate(config)          # outputs/.../predictions.jsonl
    print(summarize(predictions))           # {"n": ..., "accuracy": ..., "mean_iou": ...}

or ``run_eval("configs/eval_tiny.yaml", ["--max_samples", "8"])`` (what ``medvl eval`` calls).

**Prediction lines** (the DESIGN.md *Prediction* contract; every key is always present, None
where it does not apply):

* ``id``, ``model`` (`EvalConfig.model_name`), ``split``, ``answer_type``, ``modality``,
  ``anatomy``, ``reference`` (the Sample's ``answer``), and what a row needs to be shown on its
  own: ``question``, ``options``, ``image`` (the first image path, relative to the manifest),
  ``reference_box`` (the Sample's box);
* ``output``: the raw generated text (`Answer.raw`); ``answer``: the extracted ``<answer>``
  text (`Answer.answer`); ``reasoning``: the ``<think>`` text; ``box``: the predicted box in
  normalised scan coordinates and ``box_source`` (``head``/``text``); ``well_formed``;
* ``correct``: ``answer_correct(answer, reference, answer_type, options)``; for grounding,
  IoU >= 0.5 (Acc@0.5; None without a reference box);
* metrics: ``iou`` (grounding samples with a reference box: `box_iou`; 0.0 when no box, or one of
  the wrong dimensionality, was predicted); ``evidence_iou`` and ``grounded_correct`` (other
  answer types whose Sample has a box, the region the answer rests on: the predicted box's IoU
  with it, and whether the answer is right *and* that IoU >= 0.5); ``dice`` and ``hd95`` (the
  sample has a mask and the model predicted one, or the row is a grounding question, where a
  missing mask counts as an empty one — Dice 0 — and ``mask_missing`` says so;
  ``meta["mask_label"]``, if present, selects the mask's label value, else nonzero is
  foreground; ``hd95`` in mm from the mask file's spacing, ``hd95_px`` in pixels instead when
  the file has none, and ``Infinity`` — which Python's ``json`` reads back — when exactly one
  mask is empty); severity questions:
  ``severity_abs_error`` (an unreadable grade counted at the scale's worst error,
  `medvl.eval.text_metrics.severity_error`), ``severity_grade`` (the grade read, None when
  unreadable) and ``severity_max_grade`` (the scale's top, from the Sample's anatomy and
  modality); open questions: ``token_f1``, ``bleu``, ``rouge_l`` and ``same_findings`` (the
  same findings in any order);
* ``latency_s``: wall time of the whole batch (scan loading, preprocessing, generation, heads)
  divided by the batch's size; ``tokens``: generated tokens (the raw text re-tokenised);
* reasoning quality (:mod:`medvl.eval.reasoning`), when the Sample has reference ``reasoning``
  steps and reasoning was asked for (or given): ``reasoning_steps``,
  ``reasoning_reference_steps``, ``reasoning_matched``, ``reasoning_recall``,
  ``reasoning_precision``, ``reasoning_f1``, ``reasoning_order``, ``reasoning_consistent``,
  ``reasoning_per_100_tokens``, ``reasoning_per_second`` (all None otherwise, or with
  ``reasoning_matcher: none``).

Lines are appended and flushed + fsynced after each batch, so a crash loses at most the batch in
flight. A rerun skips ids already in the file; a truncated last line (a crash mid-write) is
dropped with a warning and its sample answered again. The config used is written beside the
output as ``<output>.config.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medvl.config import ConfigError
from medvl.data.sample import SampleError
from medvl.eval.eval_config import EvalConfig
from medvl.eval.predictions import read_predictions
from medvl.eval.scoring import reasoning_row, score
from medvl.eval.shards import merge_shards, processes, shard_path, shard_paths
from medvl.scans import ScanError

__all__ = [
    "EvalConfig",
    "evaluate",
    "load_eval_model",
    "run_eval",
    "summarize",
]

logger = logging.getLogger(__name__)


def load_eval_model(config: EvalConfig) -> Any:
    """The `MedVLM` that ``config.model`` names (``tiny:<family>-<size>`` built on first use)."""
    from medvl.model.medvlm import MedVLM

    return MedVLM.from_pretrained(config.model, dtype=config.dtype, device=_device(config.device))


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _matcher(config: EvalConfig) -> Any:
    if config.reasoning_matcher == "none":
        return None
    if config.reasoning_matcher == "judge":
        from medvl.eval.judge import JudgeMatcher, local_chat

        if config.judge_model is None:
            return JudgeMatcher()
        return JudgeMatcher(local_chat(config.judge_model, device=_device(config.device)))
    from medvl.eval.reasoning_matcher import DEFAULT_THRESHOLD, EmbeddingMatcher

    threshold = config.reasoning_threshold
    return EmbeddingMatcher(threshold=DEFAULT_THRESHOLD if threshold is None else threshold)


def _first_image(sample: Any) -> str:
    image = sample.image
    return str(image[0] if isinstance(image, (list, tuple)) else image)


def _question(sample: Any, root: Path) -> Any:
    from medvl.model.inputs import Question

    paths = sample.image_paths(root)
    if len(paths) > 1:
        logger.debug("%s: %d images; the first is shown", sample.id, len(paths))
    return Question(paths[0], sample.question, sample.options, sample.answer_type,
                    sample.modality, sample.anatomy)  # fmt: skip


def _count_tokens(model: Any, text: str) -> int:
    if not text:
        return 0
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate(config: EvalConfig, model: Any = None) -> Path:
    """Answers the manifest's samples with the model and appends one prediction line per sample.

    Args:
        config: The run's settings.
        model: An already loaded `MedVLM` to use instead of loading ``config.model`` (the
            ``model`` label still comes from the config).

    Returns:
        The predictions file (``config.output_path``).

    Raises:
        ValueError: The output already holds predictions of another model, or is damaged
            before its last line.
    """
    from medvl.data import read_manifest

    manifest = Path(config.manifest)
    root = manifest.parent
    samples = read_manifest(manifest, check_files=config.check_files)
    if config.split is not None:
        samples = [s for s in samples if s.split == config.split]
    if config.max_samples is not None:
        samples = samples[: config.max_samples]

    output = config.output_path
    output.parent.mkdir(parents=True, exist_ok=True)
    name = config.resolved_model_name
    procs = processes()  # several under accelerate launch / torchrun: medvl.eval.shards
    written = output if procs.count == 1 else shard_path(output, procs.index)
    done = read_predictions(output, repair=procs.is_main)
    for path in shard_paths(output):  # an interrupted run's shards count as done
        done += read_predictions(path, repair=path == written)
    others = sorted({str(r.get("model")) for r in done} - {name})
    if others:
        raise ValueError(
            f"{output} already holds predictions of model {', '.join(others)}, not {name!r}: "
            "choose another output (or model_name)"
        )
    if done and config.config_path.is_file() and not config.force:
        _require_same_settings(config, output)
    if procs.is_main:
        config.save_yaml(config.config_path)
    done_ids = {r["id"] for r in done}
    todo = [s for i, s in enumerate(samples)
            if i % procs.count == procs.index and s.id not in done_ids]  # fmt: skip
    logger.info("%s: %d samples, %d already done, %d to answer here",
                output, len(samples), len(done_ids), len(todo))  # fmt: skip
    if todo:
        _answer_all(config, model, todo, root, written, name, procs)
    procs.wait()
    if procs.count > 1 or shard_paths(output):
        if procs.is_main:
            merge_shards(output, [s.id for s in samples])
        procs.wait()
    return output


def _require_same_settings(config: EvalConfig, output: Path) -> None:
    """Refuse to append answers made differently from those already in ``output``."""
    saved = EvalConfig.from_yaml(config.config_path)
    changed = config.differing_settings(saved)
    if changed:
        listed = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ConfigError(
            f"{output} holds answers made with other settings ({listed}); give another output, "
            "or --force true to append anyway"
        )


def _unreadable_row(sample: Any, name: str, error: Exception) -> dict[str, Any]:
    """The line of a sample whose scan could not be read: kept, counted, never scored."""
    return {
        "id": sample.id, "model": name, "split": sample.split,
        "answer_type": sample.answer_type, "modality": sample.modality,
        "anatomy": sample.anatomy, "reference": sample.answer, "question": sample.question,
        "options": sample.options, "image": _first_image(sample), "reference_box": sample.box,
        "output": None, "answer": None, "correct": None, "well_formed": None,
        "error": str(error),
    }  # fmt: skip


def _answer_batch(config: EvalConfig, model: Any, batch: Sequence[Any], root: Path) -> list:
    """The batch's answers; a sample whose scan cannot be read gets its exception instead
    (the batch is asked again one by one to find it)."""
    unreadable = (ScanError, SampleError, FileNotFoundError, PermissionError)
    kwargs = {"max_new_tokens": config.max_new_tokens, "reasoning": config.reasoning,
              "view": config.view, "n_frames": config.n_frames, "do_sample": config.do_sample}
    try:
        return model.answer_batch([_question(s, root) for s in batch], **kwargs)
    except unreadable:
        if len(batch) == 1:
            raise
    answers: list = []
    for sample in batch:
        try:
            answers += model.answer_batch([_question(sample, root)], **kwargs)
        except unreadable as error:
            logger.warning("%s: left unanswered, its scan cannot be read: %s", sample.id, error)
            answers.append(error)
    return answers


def _answer_all(config: EvalConfig, model: Any, todo: Sequence[Any], root: Path,
                output: Path, name: str, procs: Any) -> None:  # fmt: skip
    """Answers ``todo`` and appends its lines to ``output`` (fsynced per batch)."""
    from tqdm.auto import tqdm

    _seed(config.seed)
    matcher = _matcher(config)  # before the model: a judge without an endpoint fails at once
    if model is None:
        if procs.count > 1 and config.device == "auto":
            import torch

            if torch.cuda.is_available():
                config = dataclasses.replace(config, device=f"cuda:{procs.local_index}")
        model = load_eval_model(config)
    asked = config.reasoning
    if asked is None:
        asked = bool(getattr(getattr(getattr(model, "config", None), "prompt", None),
                             "reasoning", False))  # fmt: skip
    bar = tqdm(total=len(todo), desc=f"eval {name}", unit="sample",
               disable=not config.progress or not procs.is_main)  # fmt: skip
    with output.open("a", encoding="utf-8") as f:
        for batch in _batches(todo, config.batch_size):
            start = time.perf_counter()
            try:
                answers = _answer_batch(config, model, batch, root)
            except (ScanError, SampleError, FileNotFoundError, PermissionError) as error:
                answers = [error]  # a batch of one
            rows = []
            for sample, ans in zip(batch, answers, strict=True):
                if isinstance(ans, Exception):
                    rows.append(_unreadable_row(sample, name, ans))
                    continue
                rows.append({
                    "id": sample.id, "model": name, "split": sample.split,
                    "answer_type": sample.answer_type, "modality": sample.modality,
                    "anatomy": sample.anatomy, "reference": sample.answer,
                    "question": sample.question, "options": sample.options,
                    "image": _first_image(sample), "reference_box": sample.box,
                    "output": ans.raw, "answer": ans.answer, "reasoning": ans.reasoning,
                    "box": None if ans.box is None else [float(v) for v in ans.box],
                    "box_source": ans.box_source, "well_formed": bool(ans.well_formed),
                    **score(sample, ans, root),
                    "tokens": _count_tokens(model, ans.raw),
                })  # fmt: skip
            latency = (time.perf_counter() - start) / len(batch)
            for sample, row in zip(batch, rows, strict=True):
                row["latency_s"] = latency
                if "error" not in row:
                    row.update(reasoning_row(sample, row, asked, matcher))
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    bar.close()


def summarize(predictions: str | os.PathLike | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Headline numbers of a predictions file (or its rows).

    Returns:
        ``n``, ``unreadable`` (rows whose scan could not be read: an ``error``, no answer),
        ``accuracy`` (over the rows with a ``correct``; None if none),
        ``accuracy_by_type`` (answer type -> accuracy), ``n_by_type``, ``mean_iou`` (None
        without grounding rows), ``mean_token_f1``, ``mean_severity_abs_error``,
        ``well_formed`` (fraction), ``mean_latency_s``, ``mean_reasoning_recall``,
        ``mean_reasoning_precision``, ``mean_reasoning_f1`` and ``reasoning_consistent``
        (fraction), None without reasoning scores.
    """
    rows = (
        read_predictions(predictions)
        if isinstance(predictions, (str, os.PathLike))
        else list(predictions)
    )

    def mean(values: Iterable[Any]) -> float | None:
        vals = [float(v) for v in values if v is not None]
        return sum(vals) / len(vals) if vals else None

    by_type: dict[str, list[bool]] = {}
    n_by_type: dict[str, int] = {}
    for row in rows:
        kind = str(row.get("answer_type"))
        n_by_type[kind] = n_by_type.get(kind, 0) + 1
        if row.get("correct") is not None:
            by_type.setdefault(kind, []).append(bool(row["correct"]))
    scored = [c for cs in by_type.values() for c in cs]
    return {
        "n": len(rows),
        "unreadable": sum(1 for r in rows if r.get("error")),
        "accuracy": mean(scored),
        "accuracy_by_type": {k: mean(v) for k, v in sorted(by_type.items())},
        "n_by_type": dict(sorted(n_by_type.items())),
        "mean_iou": mean(r.get("iou") for r in rows),
        "mean_token_f1": mean(r.get("token_f1") for r in rows),
        "mean_severity_abs_error": mean(r.get("severity_abs_error") for r in rows),
        "well_formed": mean(r.get("well_formed") for r in rows),
        "mean_latency_s": _finite_or_none(mean(r.get("latency_s") for r in rows)),
        **{f"mean_reasoning_{k}": mean(r.get(f"reasoning_{k}") for r in rows)
           for k in ("recall", "precision", "f1")},
        "reasoning_consistent": mean(r.get("reasoning_consistent") for r in rows),
    }  # fmt: skip


def run_eval(
    config_path: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> Path:
    """What ``medvl eval --config X [--key value ...]`` runs: load, evaluate, print a summary
    (for each of ``models``, when the config lists several).

    Returns:
        The (last) predictions file; each summary (`summarize`) is printed as JSON.

    Raises:
        medvl.config.ConfigError: An unknown key or a bad value in the YAML or the overrides.
    """
    config = EvalConfig.from_yaml(config_path, overrides)
    output = Path()
    for one in config.each_model():
        output = evaluate(one)
        if processes().is_main:
            print(json.dumps({"predictions": str(output), **summarize(output)}, indent=2))
    return output

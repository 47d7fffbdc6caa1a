"""Did fine-tuning teach the model to read the scan? The table that answers it.

Per answer type: held-out accuracy with its Wilson 95% CI beside chance, the training answer
prior and the accuracy of the same questions asked about swapped scans (`medvl.eval.ablations`),
with McNemar's test of own against swapped; box IoU beside a constant mean box fitted on the
training split, with a paired bootstrap CI of the difference; the well-formed rate; and, when
the rows carry reasoning scores, the reasoning step F1 with own and with swapped scans.

    table = learning_table(own_rows, swapped_rows, train_samples, test_samples)
    print(table.to_markdown())

``own_rows`` and ``swapped_rows`` are prediction rows of `medvl.eval.runner.evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medvl.eval.baselines import (
    SCORED_TYPES,
    chance_accuracy,
    fit_mean_box,
    mean_box_ious,
    prior_accuracy,
)
from medvl.eval.paired_proportions import mcnemar
from medvl.eval.stats import Comparison, Interval, paired_bootstrap, proportion_ci

__all__ = ["LearningTable", "TypeRow", "learning_table"]


@dataclass(frozen=True)
class TypeRow:
    """One answer type of a `LearningTable`.

    Attributes:
        answer_type: ``choice``, ``closed`` or ``severity``.
        accuracy: Accuracy on the held-out samples with their own scans (Wilson 95% CI).
        chance: Expected accuracy of a uniform guess.
        prior: Accuracy of the most common training answer per anatomy.
        swapped: Accuracy on the same samples with swapped scans (Wilson 95% CI).
        own_vs_swapped: McNemar's test, own minus swapped, paired by sample id.
    """

    answer_type: str
    accuracy: Interval
    chance: float
    prior: float
    swapped: Interval | None
    own_vs_swapped: Comparison | None

    @property
    def bar(self) -> float:
        """What the CI's lower end must clear: the higher of chance and the prior."""
        return max(self.chance, self.prior)

    @property
    def beats_bar(self) -> bool:
        """The lower end of the accuracy's CI is above `bar`."""
        return self.accuracy.low > self.bar


@dataclass(frozen=True)
class LearningTable:
    """The evidence that a model reads scans (see the module docstring).

    Attributes:
        rows: One `TypeRow` per scored answer type present.
        iou: Mean box IoU of the model's grounding answers (bootstrap CI), None without any.
        mean_box_iou: Mean IoU of the mean-box baseline on the same samples.
        iou_vs_mean_box: Paired bootstrap of model IoU minus mean-box IoU.
        swapped_iou: Mean IoU with swapped scans (None without swapped rows).
        well_formed: Share of own-scan replies in the asked shape (Wilson CI).
        n: Number of own-scan prediction rows.
        reasoning_f1: Mean reasoning step F1 with own scans (bootstrap CI; None without
            reasoning scores, `medvl.eval.reasoning`).
        swapped_reasoning_f1: The same with swapped scans.
        reasoning_vs_swapped: Paired bootstrap of own minus swapped reasoning F1.
    """

    rows: tuple[TypeRow, ...]
    iou: Interval | None
    mean_box_iou: float | None
    iou_vs_mean_box: Comparison | None
    swapped_iou: float | None
    well_formed: Interval
    n: int
    reasoning_f1: Interval | None = None
    swapped_reasoning_f1: Interval | None = None
    reasoning_vs_swapped: Comparison | None = None

    def to_markdown(self) -> str:
        """The table as Markdown, one line per answer type, then the box and format lines."""

        def ci(x: Interval | None) -> str:
            return "-" if x is None else x.brief()

        lines = [
            "| answer type | n | accuracy [95% CI] | chance | prior | swapped scans [95% CI] "
            "| own − swapped (McNemar) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            test = "-" if r.own_vs_swapped is None else (
                f"{r.own_vs_swapped.difference:+.3f}, p={r.own_vs_swapped.p_value:.2g}"
            )  # fmt: skip
            lines.append(
                f"| {r.answer_type} | {r.accuracy.n} | {ci(r.accuracy)} | {r.chance:.3f} "
                f"| {r.prior:.3f} | {ci(r.swapped)} | {test} |"
            )
        lines.append("")
        if self.iou is not None:
            d = self.iou_vs_mean_box
            swapped = "" if self.swapped_iou is None else f"; swapped scans {self.swapped_iou:.3f}"
            lines.append(
                f"Box IoU {ci(self.iou)} (n={self.iou.n}) against the training mean box "
                f"{self.mean_box_iou:.3f}: difference {d.difference:+.3f} "
                f"[{d.low:.3f}, {d.high:.3f}] (paired bootstrap){swapped}."
            )
        lines.append(f"Well-formed replies: {ci(self.well_formed)} (n={self.well_formed.n}).")
        if self.reasoning_f1 is not None:
            line = f"Reasoning step F1: {ci(self.reasoning_f1)} (n={self.reasoning_f1.n})"
            if (d := self.reasoning_vs_swapped) is not None:
                line += (
                    f"; swapped scans {ci(self.swapped_reasoning_f1)}, own − swapped "
                    f"{d.difference:+.3f} [{d.low:.3f}, {d.high:.3f}] (paired bootstrap)"
                )
            lines.append(line + ".")
        return "\n".join(lines)


def _by_id(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(r["id"]): r for r in rows}


def learning_table(
    own: Sequence[Mapping[str, Any]],
    swapped: Sequence[Mapping[str, Any]] | None,
    train: Sequence[Any],
    test: Sequence[Any],
    seed: int = 0,
) -> LearningTable:
    """Builds the `LearningTable` from prediction rows and the samples behind them.

    Args:
        own: Prediction rows with each sample's own scan.
        swapped: Prediction rows of the same ids with swapped scans, or None.
        train: Training samples (for the answer prior and the mean box).
        test: The held-out samples that ``own`` answers (for chance and the boxes).
        seed: Seeds the bootstrap.

    Raises:
        ValueError: ``swapped`` lacks an id that ``own`` has.
    """
    own_by_id = _by_id(own)
    swapped_by_id = _by_id(swapped) if swapped is not None else None
    if swapped_by_id is not None and (missing := sorted(set(own_by_id) - set(swapped_by_id))):
        raise ValueError(f"swapped predictions lack {len(missing)} ids, e.g. {missing[:3]}")
    ids = set(own_by_id)
    test = [s for s in test if str(s.id) in ids]
    chance, prior = chance_accuracy(test), prior_accuracy(train, test)
    rows = []
    for kind in SCORED_TYPES:
        kind_ids = [i for i, r in own_by_id.items() if r.get("answer_type") == kind]
        if not kind_ids:
            continue
        hits = [bool(own_by_id[i].get("correct")) for i in kind_ids]
        swap_ci = comparison = None
        if swapped_by_id is not None:
            swap_hits = [bool(swapped_by_id[i].get("correct")) for i in kind_ids]
            swap_ci = proportion_ci(sum(swap_hits), len(swap_hits))
            comparison = mcnemar(hits, swap_hits)
        rows.append(TypeRow(kind, proportion_ci(sum(hits), len(hits)), chance.get(kind, 0.0),
                            prior.get(kind, 0.0), swap_ci, comparison))  # fmt: skip

    iou = mean_box = comparison = swapped_iou = None
    baseline = mean_box_ious(fit_mean_box(train), test)
    boxed = [i for i in baseline if own_by_id[i].get("iou") is not None]
    if boxed:
        from medvl.eval.stats import bootstrap_ci

        model_iou = np.array([float(own_by_id[i]["iou"]) for i in boxed])
        base_iou = np.array([baseline[i] for i in boxed])
        iou = bootstrap_ci(model_iou, seed=seed)
        mean_box = float(base_iou.mean())
        comparison = paired_bootstrap(model_iou, base_iou, seed=seed)
        if swapped_by_id is not None:
            swapped_iou = float(np.mean([float(swapped_by_id[i].get("iou") or 0.0) for i in boxed]))
    formed = [bool(r.get("well_formed")) for r in own]
    return LearningTable(
        tuple(rows), iou, mean_box, comparison, swapped_iou,
        proportion_ci(sum(formed), len(formed)), len(own),
        *_reasoning(own_by_id, swapped_by_id, seed),
    )  # fmt: skip


def _reasoning(
    own: Mapping[str, Mapping[str, Any]],
    swapped: Mapping[str, Mapping[str, Any]] | None,
    seed: int,
) -> tuple[Interval | None, Interval | None, Comparison | None]:
    from medvl.eval.stats import bootstrap_ci

    ids = [i for i, r in own.items() if r.get("reasoning_f1") is not None]
    if not ids:
        return None, None, None
    mine = np.array([float(own[i]["reasoning_f1"]) for i in ids])
    if swapped is None:
        return bootstrap_ci(mine, seed=seed), None, None
    theirs = np.array([float(swapped[i].get("reasoning_f1") or 0.0) for i in ids])
    return (bootstrap_ci(mine, seed=seed), bootstrap_ci(theirs, seed=seed),
            paired_bootstrap(mine, theirs, seed=seed))  # fmt: skip

"""Did a training stage make the model better? Each stage on the same held-out questions.

One row per stage (e.g. the base model, after SFT, after GRPO): accuracy with its Wilson 95% CI
(a grounding question counts as right at IoU >= 0.5, Acc@0.5), the same questions asked about
swapped scans, the well-formed rate and, where there are grounding questions, the mean IoU
with its bootstrap CI; beside them chance and the training answer prior; then the paired
difference of two stages on the same questions with its bootstrap 95% CI and McNemar's exact
test (and the paired difference of their IoUs). `stage_tables_by_type` splits the same by
answer type.

    table = stage_table({"base": (base_rows, None), "sft": (sft, sft_swapped),
                         "grpo": (grpo, grpo_swapped)}, train, test, compare=("grpo", "sft"))
    print(table.to_markdown())
    by_type = stage_tables_by_type(stages, train, test, compare=("grpo", "sft"))

Rows are prediction rows of `medvl.eval.runner.evaluate`, matched by sample id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medvl.eval.baselines import chance_accuracy, fit_mean_box, mean_box_ious, prior_accuracy
from medvl.eval.paired_proportions import mcnemar
from medvl.eval.scoring import ACC_IOU
from medvl.eval.stats import (
    Comparison,
    Interval,
    bootstrap_ci,
    paired_bootstrap,
    proportion_ci,
)

__all__ = ["StageRow", "StageTable", "stage_table", "stage_tables_by_type"]

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class StageRow:
    """One stage of a `StageTable`.

    Attributes:
        name: The stage, e.g. ``sft``.
        accuracy: Held-out accuracy with each sample's own scan (Wilson 95% CI).
        swapped: Accuracy of the same questions about swapped scans (None: not asked).
        well_formed: Share of replies in the asked shape (Wilson 95% CI).
        mean_iou: Mean IoU of the grounding questions' boxes (bootstrap 95% CI; a reply
            without a box counts 0), or None without grounding questions.
    """

    name: str
    accuracy: Interval
    swapped: Interval | None
    well_formed: Interval
    mean_iou: Interval | None = None


@dataclass(frozen=True)
class StageTable:
    """Stages side by side, and the paired gain of one over another.

    Attributes:
        rows: One `StageRow` per stage, in the order given.
        chance: Accuracy of a uniform guess, averaged over the held-out samples.
        prior: Accuracy of the most common training answer (per answer type and anatomy; for
            grounding questions, the Acc@0.5 of the training mean box of the question).
        compared: ``(later, earlier)`` stage names of `gain`, or None.
        gain: Paired bootstrap of later minus earlier accuracy on the same samples.
        mcnemar: McNemar's exact test of the same pairs (its ``p_value``).
        iou_gain: Paired bootstrap of later minus earlier IoU on the grounding questions, or
            None without them.
        mean_box_iou: Mean IoU of the training mean box of each grounding question (a model
            that never looks at the scan), or None without grounding questions.
    """

    rows: tuple[StageRow, ...]
    chance: float
    prior: float
    compared: tuple[str, str] | None
    gain: Comparison | None
    mcnemar: Comparison | None
    iou_gain: Comparison | None = None
    mean_box_iou: float | None = None

    def row(self, name: str) -> StageRow:
        """The row of stage ``name``."""
        return next(r for r in self.rows if r.name == name)

    @property
    def gain_is_real(self) -> bool:
        """The later stage is better, and better than a model that ignores the scan.

        True when the lower end of the 95% CI of the accuracy gain is above 0 and that of the
        later stage's accuracy above the prior, or the same for the IoU gain with the later
        stage's mean IoU above the training mean box's: boxes that move towards the average
        box, or answers towards the common one, are not read from the scan.
        """
        if self.compared is None:
            return False
        later = self.row(self.compared[0])
        if self.gain is not None and self.gain.low > 0 and later.accuracy.low > self.prior:
            return True
        floor = self.mean_box_iou or 0.0
        return (self.iou_gain is not None and self.iou_gain.low > 0
                and later.mean_iou is not None and later.mean_iou.low > floor)  # fmt: skip

    def to_markdown(self) -> str:
        """The table as Markdown, then the paired-difference line."""

        def ci(x: Interval | None) -> str:
            return "-" if x is None else x.brief()

        iou = any(r.mean_iou is not None for r in self.rows)
        lines = [
            "| stage | n | accuracy [95% CI] | swapped scans [95% CI] | well formed | chance "
            "| prior |" + (" mean IoU [95% CI] |" if iou else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if iou else ""),
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {r.accuracy.n} | {ci(r.accuracy)} | {ci(r.swapped)} "
                f"| {r.well_formed.estimate:.2f} | {self.chance:.3f} | {self.prior:.3f} |"
                + (f" {ci(r.mean_iou)} |" if iou else "")
            )
        if self.mean_box_iou is not None:
            lines += ["", f"training mean box (never looks at the scan): mean IoU "
                          f"{self.mean_box_iou:.3f}"]  # fmt: skip
        if self.compared is not None:
            later, earlier = self.compared
            lines.append("")
            if self.gain is not None and self.mcnemar is not None:
                g = self.gain
                lines.append(
                    f"{later} − {earlier}: {g.difference:+.3f} [{g.low:.3f}, {g.high:.3f}] "
                    f"(paired bootstrap 95% CI, n={g.n}); McNemar p = {self.mcnemar.p_value:.2g}"
                )
            if (d := self.iou_gain) is not None:
                lines.append(f"{later} − {earlier}, IoU: {d.difference:+.3f} "
                             f"[{d.low:.3f}, {d.high:.3f}] (paired bootstrap 95% CI, n={d.n})")
        return "\n".join(lines)


def _hits(rows: Mapping[str, Mapping[str, Any]], ids: Sequence[str]) -> list[bool]:
    return [bool(rows[i].get("correct")) for i in ids]


def _ci(values: Sequence[bool]) -> Interval:
    return proportion_ci(sum(values), len(values))


def _ious(rows: Mapping[str, Mapping[str, Any]], ids: Sequence[str]) -> list[float]:
    return [float(rows[i].get("iou") or 0.0) for i in ids]


def stage_table(
    stages: Mapping[str, tuple[Rows, Rows | None]],
    train: Sequence[Any],
    test: Sequence[Any],
    compare: tuple[str, str] | None = None,
    seed: int = 0,
) -> StageTable:
    """Builds the `StageTable`.

    Args:
        stages: Stage name -> (own-scan rows, swapped-scan rows or None), in table order.
        train: Training samples (for the answer prior).
        test: The held-out samples the rows answer (for chance and the prior).
        compare: ``(later, earlier)``: the two stages whose paired difference is tested.
        seed: Seeds the bootstrap.

    Raises:
        ValueError: The stages did not answer the same ids, or ``compare`` names an unknown
            stage.
    """
    by_stage = {name: {str(r["id"]): r for r in own} for name, (own, _) in stages.items()}
    ids = sorted(next(iter(by_stage.values()))) if by_stage else []
    for name, rows in by_stage.items():
        if sorted(rows) != ids:
            raise ValueError(f"stage {name!r} answered other ids than the first stage")
    if compare is not None and (unknown := set(compare) - set(stages)):
        raise ValueError(f"compare names unknown stages {sorted(unknown)}; have {list(stages)}")
    answered = set(ids)
    held_out = [s for s in test if str(s.id) in answered]
    grounding = sorted(str(s.id) for s in held_out if s.answer_type == "grounding")
    rows = []
    for name, (_, swapped) in stages.items():
        own = by_stage[name]
        swap = None
        if swapped is not None:
            swapped_by_id = {str(r["id"]): r for r in swapped}
            swap = _ci(_hits(swapped_by_id, ids))
        formed = [bool(own[i].get("well_formed")) for i in ids]
        iou = bootstrap_ci(_ious(own, grounding), seed=seed) if grounding else None
        rows.append(StageRow(name, _ci(_hits(own, ids)), swap, _ci(formed), iou))

    kinds = [s.answer_type for s in held_out]
    chance_by, prior_by = chance_accuracy(held_out), prior_accuracy(train, held_out)
    mean_box = None
    if grounding:
        by_id = mean_box_ious(fit_mean_box(train), held_out)
        mean_box = float(np.mean([by_id.get(i, 0.0) for i in grounding]))
        prior_by["grounding"] = float(np.mean([by_id.get(i, 0.0) >= ACC_IOU for i in grounding]))
    chance = float(np.mean([chance_by.get(k, 0.0) for k in kinds])) if kinds else 0.0
    prior = float(np.mean([prior_by.get(k, 0.0) for k in kinds])) if kinds else 0.0

    gain = exact = iou_gain = None
    if compare is not None:
        later, earlier = (_hits(by_stage[name], ids) for name in compare)
        gain = paired_bootstrap(np.array(later, float), np.array(earlier, float), seed=seed)
        exact = mcnemar(later, earlier)
        if grounding:
            later_iou, earlier_iou = (_ious(by_stage[name], grounding) for name in compare)
            iou_gain = paired_bootstrap(np.array(later_iou), np.array(earlier_iou), seed=seed)
    return StageTable(tuple(rows), chance, prior, compare, gain, exact, iou_gain, mean_box)


def stage_tables_by_type(
    stages: Mapping[str, tuple[Rows, Rows | None]],
    train: Sequence[Any],
    test: Sequence[Any],
    compare: tuple[str, str] | None = None,
    seed: int = 0,
) -> dict[str, StageTable]:
    """`stage_table` of each answer type in ``test``, in order of first appearance.

    Same arguments as `stage_table`; each table keeps the rows of its type's samples only.
    """
    kinds: dict[str, set[str]] = {}
    for s in test:
        kinds.setdefault(s.answer_type, set()).add(str(s.id))

    def keep(rows: Rows | None, ids: set[str]) -> Rows | None:
        return None if rows is None else [r for r in rows if str(r["id"]) in ids]

    return {
        kind: stage_table(
            {name: (keep(own, ids), keep(swapped, ids)) for name, (own, swapped) in stages.items()},
            train, [s for s in test if s.answer_type == kind], compare=compare, seed=seed,
        )  # fmt: skip
        for kind, ids in kinds.items()
    }

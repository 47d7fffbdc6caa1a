"""Did a training stage make the model better? Each stage on the same held-out questions.

One row per stage (e.g. the base model, after SFT, after GRPO): accuracy with its Wilson 95% CI,
the same questions asked about swapped scans, and the well-formed rate; beside them chance and
the training answer prior; then the paired difference of two stages on the same questions with
its bootstrap 95% CI and McNemar's exact test.

    table = stage_table({"base": (base_rows, None), "sft": (sft, sft_swapped),
                         "grpo": (grpo, grpo_swapped)}, train, test, compare=("grpo", "sft"))
    print(table.to_markdown())

Rows are prediction rows of `medvl.eval.runner.evaluate`, matched by sample id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medvl.eval.baselines import chance_accuracy, prior_accuracy
from medvl.eval.paired_proportions import mcnemar
from medvl.eval.stats import Comparison, Interval, paired_bootstrap, proportion_ci

__all__ = ["StageRow", "StageTable", "stage_table"]

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class StageRow:
    """One stage of a `StageTable`.

    Attributes:
        name: The stage, e.g. ``sft``.
        accuracy: Held-out accuracy with each sample's own scan (Wilson 95% CI).
        swapped: Accuracy of the same questions about swapped scans (None: not asked).
        well_formed: Share of replies in the asked shape (Wilson 95% CI).
    """

    name: str
    accuracy: Interval
    swapped: Interval | None
    well_formed: Interval


@dataclass(frozen=True)
class StageTable:
    """Stages side by side, and the paired gain of one over another.

    Attributes:
        rows: One `StageRow` per stage, in the order given.
        chance: Accuracy of a uniform guess, averaged over the held-out samples.
        prior: Accuracy of the most common training answer (per answer type and anatomy).
        compared: ``(later, earlier)`` stage names of `gain`, or None.
        gain: Paired bootstrap of later minus earlier accuracy on the same samples.
        mcnemar: McNemar's exact test of the same pairs (its ``p_value``).
    """

    rows: tuple[StageRow, ...]
    chance: float
    prior: float
    compared: tuple[str, str] | None
    gain: Comparison | None
    mcnemar: Comparison | None

    def row(self, name: str) -> StageRow:
        """The row of stage ``name``."""
        return next(r for r in self.rows if r.name == name)

    @property
    def gain_is_real(self) -> bool:
        """The lower end of the gain's 95% CI is above 0."""
        return self.gain is not None and self.gain.low > 0

    def to_markdown(self) -> str:
        """The table as Markdown, then the paired-difference line."""

        def ci(x: Interval | None) -> str:
            return "-" if x is None else x.brief()

        lines = [
            "| stage | n | accuracy [95% CI] | swapped scans [95% CI] | well formed | chance "
            "| prior |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {r.accuracy.n} | {ci(r.accuracy)} | {ci(r.swapped)} "
                f"| {r.well_formed.estimate:.2f} | {self.chance:.3f} | {self.prior:.3f} |"
            )
        if self.gain is not None and self.compared is not None and self.mcnemar is not None:
            later, earlier = self.compared
            g = self.gain
            lines += [
                "",
                f"{later} − {earlier}: {g.difference:+.3f} [{g.low:.3f}, {g.high:.3f}] "
                f"(paired bootstrap 95% CI, n={g.n}); McNemar p = {self.mcnemar.p_value:.2g}",
            ]
        return "\n".join(lines)


def _hits(rows: Mapping[str, Mapping[str, Any]], ids: Sequence[str]) -> list[bool]:
    return [bool(rows[i].get("correct")) for i in ids]


def _ci(values: Sequence[bool]) -> Interval:
    return proportion_ci(sum(values), len(values))


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
    rows = []
    for name, (_, swapped) in stages.items():
        own = by_stage[name]
        swap = None
        if swapped is not None:
            swapped_by_id = {str(r["id"]): r for r in swapped}
            swap = _ci(_hits(swapped_by_id, ids))
        formed = [bool(own[i].get("well_formed")) for i in ids]
        rows.append(StageRow(name, _ci(_hits(own, ids)), swap, _ci(formed)))

    held_out = [s for s in test if str(s.id) in set(ids)]
    kinds = [s.answer_type for s in held_out]
    chance_by, prior_by = chance_accuracy(held_out), prior_accuracy(train, held_out)
    chance = float(np.mean([chance_by.get(k, 0.0) for k in kinds])) if kinds else 0.0
    prior = float(np.mean([prior_by.get(k, 0.0) for k in kinds])) if kinds else 0.0

    gain = exact = None
    if compare is not None:
        later, earlier = (_hits(by_stage[name], ids) for name in compare)
        gain = paired_bootstrap(np.array(later, float), np.array(earlier, float), seed=seed)
        exact = mcnemar(later, earlier)
    return StageTable(tuple(rows), chance, prior, compare, gain, exact)

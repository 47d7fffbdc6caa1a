"""SFT, then GRPO from the SFT checkpoint: does the reward make the model better than SFT did?

The method of MedVLM-R1 and Med-R1 (SFT or a base model, then GRPO with verifiable rewards), run
end to end through medvl's own path on phantoms. By default (`NODULE`) it asks the question a
tiny model can learn on a CPU, "Is there a pulmonary nodule" on chest phantoms at a difficulty
level (`medvl.scans.phantoms.chest.DIFFICULTIES`); ``questions`` asks others of any phantom
kind (the quickstart adds fundus and knee grounding for the box head).

1. training, validation and held-out cases from different seeds
   (`medvl.experiments.phantom_samples_of`);
2. `SFTTrainer`, answer only (the tiny model's accuracy drops with reasoning, docs/learning.md),
   with the grounding heads asked for;
3. `GRPOTrainer` from SFT's ``final/`` with the rewards asked for (accuracy by default), G
   completions per question and a KL term to the SFT model;
4. the base model, SFT and GRPO answer the held-out questions, SFT and GRPO also about swapped
   scans (a model that reads the scan drops to chance there);
5. `medvl.eval.stage_table.stage_table`: each stage's accuracy with its CI, and GRPO − SFT with
   a paired bootstrap CI and McNemar's test, overall and per answer type (with the mean IoU of
   grounding questions); the evaluation report of the three stages.

Example:
    >>> result = run_sft_then_grpo("runs/proof")
    >>> print(result.table.to_markdown())

Settings and what each gave: docs/learning.md, section 3.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medvl.data.manifest import write_manifest
from medvl.eval.report import make_report
from medvl.eval.stage_table import StageTable, stage_table, stage_tables_by_type
from medvl.experiments import (
    PhantomQuestions,
    answer_own_and_swapped,
    fresh_folder,
    phantom_samples_of,
    train_and_answer,
)

__all__ = ["NODULE", "StagesResult", "run_sft_then_grpo"]

NODULE = (PhantomQuestions("chest", ("closed",), "nodule", train_cases=800, test_cases=300),)
"""'Is there a pulmonary nodule' on 800 training and 300 held-out chest phantoms (about 0.6
such questions per case): the one question on which GRPO was shown to beat SFT
(docs/learning.md, section 3)."""


@dataclass
class StagesResult:
    """What `run_sft_then_grpo` did.

    Attributes:
        table: Base, SFT and GRPO on the held-out questions, and GRPO − SFT.
        by_type: The same for each answer type of the held-out questions.
        sft: SFT's ``final/`` folder.
        grpo: GRPO's ``final/`` folder.
        report: ``report.md`` of the three stages (``report.html`` beside it), SFT first: its
            paired comparisons are GRPO − SFT and base − SFT.
        test: The held-out manifest.
        sft_val_loss: SFT's loss on the validation cases at its end (None without them).
        predictions: Each stage's prediction file on its own scans (``base``, ``sft``,
            ``grpo``).
        seconds: Wall time of each stage (``data``, ``sft``, ``grpo``, ``eval``).
    """

    table: StageTable
    by_type: dict[str, StageTable]
    sft: Path
    grpo: Path
    report: Path | None = None
    test: Path | None = None
    sft_val_loss: float | None = None
    predictions: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_sft_then_grpo(
    folder: str | os.PathLike,
    questions: Sequence[PhantomQuestions] = NODULE,
    difficulty: str = "easiest",
    sft_steps: int = 600,
    sft_lr: float = 1e-3,
    grpo_steps: int = 400,
    grpo_lr: float = 3e-4,
    num_generations: int = 8,
    grpo_batch_size: int = 4,
    beta: float = 0.04,
    dynamic_sampling: int = 0,
    box_head_std: float = 0.0,
    rewards: Sequence[str] = ("accuracy",),
    grpo_types: Sequence[str] | None = None,
    heads: Sequence[str] = (),
    max_new_tokens: int = 16,
    model: str = "tiny:qwen2_5_vl-tiny",
    seed: int = 0,
    progress: bool = False,
) -> StagesResult:
    """Runs the five steps of the module docstring in ``folder`` (a reused folder starts over).

    Args:
        folder: Work folder: ``data/``, ``sft/``, ``grpo/`` and the prediction files.
        questions: What is asked of which phantom kind, on how many training, validation and
            held-out cases (each split's cases come from a seed of its own).
        difficulty: Chest phantom difficulty level.
        sft_steps: SFT optimizer steps (batch 4, 20 warm-up steps, cosine). Short enough to
            leave GRPO room: 600 steps reach ~0.6, 1,200 ~0.9 (docs/learning.md).
        sft_lr: SFT's peak learning rate.
        grpo_steps: GRPO steps (``grpo_batch_size`` questions each, constant learning rate).
        grpo_lr: GRPO's learning rate.
        num_generations: G, answers sampled per question.
        grpo_batch_size: Questions per GRPO step.
        beta: Weight of GRPO's KL term to the SFT model (a frozen copy). 0.04 rather than 0:
            on seed 0 it gave +0.171 over SFT against +0.029 without, on seeds 1 and 2 the
            same +0.046 as without (the policy still collapses to one answer there;
            docs/learning.md, section 3).
        dynamic_sampling: GRPO's further batches per step to replace groups without reward
            spread (`medvl.train.grpo_config.GRPOConfig.dynamic_sampling`; 0: off). 4, with
            β 0.04, made the nodule gain significant on GRPO seeds 0 and 1 of 0, 1, 2 rather
            than on seed 0 alone (docs/learning.md, section 3).
        box_head_std: σ of the box head's Gaussian policy in GRPO (with the ``box_head``
            reward; `medvl.train.grpo_config.GRPOConfig.box_head_std`; 0: GRPO does not train
            the head).
        rewards: GRPO's rewards (`medvl.train.grpo_config.REWARD_NAMES`).
        grpo_types: The answer types GRPO trains on (None: all that ``questions`` ask); every
            type is still evaluated.
        heads: Grounding heads SFT trains (``["box"]``; GRPO keeps them).
        max_new_tokens: Token budget of GRPO's completions and of every answer (a box as text
            needs ~40).
        model: The start model (``tiny:<family>-<size>`` or a folder).
        seed: Seeds the cases, both trainings, the swap and the answers.
        progress: Show tqdm bars.
    """
    from medvl.data.dataset import DatasetConfig
    from medvl.train.grpo import GRPOConfig, GRPOTrainer

    folder = fresh_folder(folder)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    data = folder / "data"
    train = phantom_samples_of(data, questions, 2 * seed + 1, difficulty, "train", progress)
    test = phantom_samples_of(data, questions, 2 * seed + 2, difficulty, "test", progress)
    # Validation cases from a set no run's training or held-out cases use.
    val = phantom_samples_of(data, questions, 1000 + seed, difficulty, "val", progress)
    val_path = write_manifest(data / "val.jsonl", val) if val else None
    train_path = write_manifest(data / "train.jsonl", train)
    grpo_path = train_path
    if grpo_types is not None:
        grpo_train = [s for s in train if s.answer_type in set(grpo_types)]
        grpo_path = write_manifest(data / "train_grpo.jsonl", grpo_train)
    test_path = write_manifest(data / "test.jsonl", test)
    lap("data")

    base = answer_own_and_swapped(folder / "base", model, test_path, names=("base", None),
                                  max_new_tokens=max_new_tokens, seed=seed,
                                  progress=progress)  # fmt: skip
    lap("eval")
    sft = train_and_answer(folder / "sft_stage", train_path, test_path, model, sft_steps,
                           lr=sft_lr, warmup_steps=20, seed=seed, progress=progress,
                           heads=heads, max_new_tokens=max_new_tokens, val=val_path)  # fmt: skip
    sft_final = folder / "sft_stage" / "sft" / "final"
    sft_log = folder / "sft_stage" / "sft" / "train_log.jsonl"
    val_losses = [r["eval_loss"] for r in map(json.loads, sft_log.read_text().splitlines())
                  if "eval_loss" in r]  # fmt: skip
    lap("sft")

    config = GRPOConfig(
        model=str(sft_final), train_manifest=str(grpo_path), output_dir=str(folder / "grpo"),
        rewards=list(rewards), lr=grpo_lr, lr_scheduler="constant", warmup_steps=0,
        max_steps=grpo_steps, batch_size=grpo_batch_size, num_generations=num_generations,
        max_new_tokens=max_new_tokens, beta=beta, dynamic_sampling=dynamic_sampling,
        box_head_std=box_head_std,
        save_every=None, report_to="none", seed=seed, progress=progress, log_every=50,
        dataset=DatasetConfig(cache="memory"),
    )  # fmt: skip
    trainer = GRPOTrainer(config)
    grpo_final = trainer.train()
    tuned = trainer.accelerator.unwrap_model(trainer.model).eval()
    lap("grpo")
    grpo = answer_own_and_swapped(folder / "grpo_eval", grpo_final, test_path, seed=seed,
                                  max_new_tokens=max_new_tokens, progress=progress,
                                  model=tuned)  # fmt: skip
    lap("eval")
    stages = {"base": (base["base"], None), "sft": (sft["own"], sft["swapped"]),
              "grpo": (grpo["own"], grpo["swapped"])}  # fmt: skip
    table = stage_table(stages, train, test, compare=("grpo", "sft"), seed=seed)
    by_type = stage_tables_by_type(stages, train, test, compare=("grpo", "sft"), seed=seed)
    files = {"sft": folder / "sft_stage" / "predictions_own.jsonl",
             "grpo": folder / "grpo_eval" / "predictions_own.jsonl",
             "base": folder / "base" / "predictions_base.jsonl"}  # fmt: skip
    report = make_report(list(files.values()), folder / "report", names=list(files))
    lap("eval")
    return StagesResult(table, by_type, sft_final, Path(grpo_final), report, test_path,
                        val_losses[-1] if val_losses else None, files, seconds)  # fmt: skip

"""Does a model see where things are? Train on a seeing task, score held-out and swapped pictures.

One run goes through medvl's own path, as a user's would: `medvl.data.seeing` writes the
pictures and manifests, `SFTTrainer` fine-tunes (answer only, no reasoning), the evaluator
answers the held-out split twice, once with each sample's own picture and once with another
sample's (`medvl.eval.ablations.swap_scans`). A model that reads the picture is right on its own
pictures and at chance on swapped ones; one that learned the answer prior is at chance on both.

Example:
    >>> result = run_seeing("runs/sees/qwen3_vl", "quadrant", family="qwen3_vl", steps=400)
    >>> print(result.accuracy, result.swapped, result.chance)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medvl.data.manifest import read_manifest, write_manifest
from medvl.data.seeing import write_seeing_task
from medvl.eval.ablations import swap_scans
from medvl.eval.stats import Interval, proportion_ci

__all__ = ["SeeingResult", "run_seeing"]

CHANCE = {"presence": 0.5, "quadrant": 0.25}


@dataclass(frozen=True)
class SeeingResult:
    """The outcome of one `run_seeing`.

    Attributes:
        task: ``presence`` or ``quadrant``.
        model: The model trained, e.g. ``tiny:qwen2_5_vl-small``.
        steps: Optimizer steps of SFT.
        accuracy: Held-out accuracy on the samples' own pictures (Wilson 95% CI).
        swapped: Accuracy of the same questions on swapped pictures (Wilson 95% CI).
        chance: Accuracy of the most common answer (answers are balanced).
        seconds: Wall time of the whole run (data, training, both evaluations).
    """

    task: str
    model: str
    steps: int
    accuracy: Interval
    swapped: Interval
    chance: float
    seconds: float

    @property
    def sees(self) -> bool:
        """Own-picture accuracy's CI is above chance and swapped's CI includes chance."""
        return self.accuracy.low > self.chance and self.swapped.low <= self.chance


def _accuracy(predictions: Path) -> Interval:
    from medvl.eval.runner import read_predictions

    rows = read_predictions(predictions)
    return proportion_ci(sum(bool(r["correct"]) for r in rows), len(rows))


def run_seeing(
    folder: str | os.PathLike,
    task: Literal["presence", "quadrant"],
    family: str = "qwen2_5_vl",
    size: str = "small",
    steps: int = 600,
    lr: float = 1e-3,
    batch_size: int = 4,
    n_train: int = 160,
    n_test: int = 40,
    seed: int = 0,
    progress: bool = False,
) -> SeeingResult:
    """Writes a seeing task, fine-tunes a tiny build on it and scores the held-out split.

    Args:
        folder: Work folder (data, SFT output, predictions); reused runs start over.
        task: ``presence`` or ``quadrant`` (`medvl.data.seeing`).
        family: ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``.
        size: Tiny build size, ``tiny`` or ``small``.
        steps: SFT optimizer steps.
        lr: Peak learning rate (10 warm-up steps, then cosine).
        batch_size: Samples per step.
        n_train: Training pictures.
        n_test: Held-out pictures.
        seed: Seeds the pictures, the training and the swap.
        progress: Show tqdm bars.
    """
    import shutil

    from medvl.eval.runner import EvalConfig, evaluate
    from medvl.train.sft import SFTConfig, SFTTrainer

    start = time.perf_counter()
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    train, test = write_seeing_task(folder / "data", task, n_train, n_test, seed=seed)
    swapped = write_manifest(
        folder / "data" / "test_swapped.jsonl", swap_scans(read_manifest(test), seed=seed)
    )
    model = f"tiny:{family}-{size}"
    config = SFTConfig(
        model=model, train_manifest=str(train), output_dir=str(folder / "sft"), lr=lr,
        warmup_steps=10, max_steps=steps, batch_size=batch_size, save_every=None,
        report_to="none", reasoning=False, seed=seed, progress=progress, log_every=50,
    )  # fmt: skip
    trainer = SFTTrainer(config)
    trainer.train()
    tuned = trainer.accelerator.unwrap_model(trainer.model).eval()
    scores = []
    for name, manifest in (("own", test), ("swapped", swapped)):
        out = evaluate(
            EvalConfig(
                model=str(folder / "sft" / "final"), manifest=str(manifest),
                output=str(folder / f"predictions_{name}.jsonl"), model_name=name,
                reasoning=False, max_new_tokens=16, batch_size=8, seed=seed, progress=progress,
            ),  # fmt: skip
            model=tuned,
        )
        scores.append(_accuracy(out))
    return SeeingResult(task, model, steps, scores[0], scores[1], CHANCE[task],
                        time.perf_counter() - start)  # fmt: skip

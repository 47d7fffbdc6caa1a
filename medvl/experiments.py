"""Does fine-tuning teach a model to read the picture? Train, then answer own and swapped scans.

Each experiment goes through medvl's own path, as a user's would: manifests on disk,
`SFTTrainer` (answer only, no reasoning), then the evaluator on the held-out samples twice, once
with each sample's own scan and once with another sample's (`medvl.eval.ablations.swap_scans`).
A model that reads the scan is right on its own scans and at chance on swapped ones; one that
learned the answer prior is at chance on both.

* `run_seeing`: the seeing tasks of `medvl.data.seeing` (is a disc there, which quadrant).
* `run_phantom_reading`: chest phantoms at a difficulty level, scored with
  `medvl.eval.learning.learning_table`.

Both call `medvl.train`: experiments, like the quickstart, not library layers.

Example:
    >>> result = run_seeing("runs/sees/qwen3_vl", "quadrant", family="qwen3_vl", steps=400)
    >>> print(result.accuracy, result.swapped, result.chance)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medvl.data.manifest import read_manifest, write_manifest
from medvl.data.sample import Sample
from medvl.data.seeing import write_seeing_task
from medvl.eval.ablations import swap_scans
from medvl.eval.learning import LearningTable, learning_table
from medvl.eval.stats import Interval, proportion_ci

__all__ = [
    "PhantomQuestions", "SeeingResult", "answer_own_and_swapped", "fresh_folder",
    "phantom_samples_of", "run_phantom_reading", "run_seeing", "train_and_answer",
]  # fmt: skip

CHANCE = {"presence": 0.5, "quadrant": 0.25}


def train_and_answer(
    folder: str | os.PathLike,
    train: str | os.PathLike,
    test: str | os.PathLike,
    model: str,
    steps: int,
    lr: float = 1e-3,
    warmup_steps: int = 10,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = False,
    heads: Sequence[str] = (),
    reasoning: bool = False,
    max_new_tokens: int = 16,
    val: str | os.PathLike | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Fine-tunes ``model`` on the ``train`` manifest, then answers ``test`` with own and swapped
    scans.

    Args:
        folder: Work folder: ``sft/`` (the run, ``final/``) and the prediction files.
        train: Training manifest.
        test: Held-out manifest; its swapped twin ``<stem>_swapped.jsonl`` is written beside
            it.
        model: A model folder or ``tiny:<family>-<size>``.
        steps: SFT optimizer steps (cosine after ``warmup_steps``).
        lr: Peak learning rate.
        warmup_steps: Linear warm-up steps.
        batch_size: Samples per step.
        seed: Seeds the training, the swap and the answers.
        progress: Show tqdm bars.
        heads: Grounding heads to train (e.g. ``["box"]``).
        reasoning: Train and answer with ``<think>`` reasoning first (else the answer alone).
        max_new_tokens: Generation budget per answer.
        val: A validation manifest: SFT's loss on it at the end, in ``sft/train_log.jsonl``
            (``eval_loss``).

    Returns:
        ``{"own": rows, "swapped": rows}``: prediction rows of `medvl.eval.runner.evaluate`.
    """
    from medvl.data.dataset import DatasetConfig
    from medvl.train.sft import SFTConfig, SFTTrainer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = SFTConfig(
        model=model, train_manifest=str(train), output_dir=str(folder / "sft"), lr=lr,
        warmup_steps=warmup_steps, max_steps=steps, batch_size=batch_size, save_every=None,
        report_to="none", reasoning=reasoning, seed=seed, progress=progress, log_every=50,
        dataset=DatasetConfig(cache="memory"), heads=list(heads),
        eval_manifest=None if val is None else str(val),
    )  # fmt: skip
    trainer = SFTTrainer(config)
    trainer.train()
    tuned = trainer.accelerator.unwrap_model(trainer.model).eval()
    return answer_own_and_swapped(folder, folder / "sft" / "final", test, reasoning=reasoning,
                                  max_new_tokens=max_new_tokens, seed=seed, progress=progress,
                                  model=tuned)  # fmt: skip


def answer_own_and_swapped(
    folder: str | os.PathLike,
    checkpoint: str | os.PathLike,
    test: str | os.PathLike,
    names: tuple[str, str | None] = ("own", "swapped"),
    reasoning: bool = False,
    max_new_tokens: int = 16,
    seed: int = 0,
    progress: bool = False,
    model: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """Answers the ``test`` manifest with each sample's own scan and with swapped scans.

    Args:
        folder: Where ``predictions_<name>.jsonl`` go (a file there is replaced, not resumed).
        checkpoint: The model folder (or ``tiny:`` name) to answer with.
        test: Held-out manifest; its swapped twin ``<stem>_swapped.jsonl`` is written beside
            it (image paths are relative to the manifest).
        names: Labels of the two prediction files, own first (None for the second: own only).
        reasoning: Ask for ``<think>`` reasoning first.
        max_new_tokens: Generation budget per answer.
        seed: Seeds the swap and the answers.
        progress: Show tqdm bars.
        model: The loaded `MedVLM` of ``checkpoint``, to skip loading it again.

    Returns:
        ``{name: rows}``: prediction rows of `medvl.eval.runner.evaluate`.
    """
    from medvl.eval.predictions import read_predictions
    from medvl.eval.runner import EvalConfig, evaluate

    folder, test = Path(folder), Path(test)
    manifests = {names[0]: test}
    if names[1] is not None:
        swapped = swap_scans(read_manifest(test), seed=seed)
        manifests[names[1]] = write_manifest(test.with_name(f"{test.stem}_swapped.jsonl"), swapped)
    rows = {}
    for name, manifest in manifests.items():
        output = folder / f"predictions_{name}.jsonl"
        output.unlink(missing_ok=True)  # evaluation resumes a file: a rerun must start over
        out = evaluate(
            EvalConfig(
                model=str(checkpoint), manifest=str(manifest), output=str(output),
                model_name=name, reasoning=reasoning, max_new_tokens=max_new_tokens,
                batch_size=8, seed=seed, progress=progress,
            ),  # fmt: skip
            model=model,
        )
        rows[name] = read_predictions(out)
    return rows


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


def _accuracy(rows: Sequence[dict[str, Any]]) -> Interval:
    return proportion_ci(sum(bool(r["correct"]) for r in rows), len(rows))


def fresh_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, removed first if it exists (a rerun starts over)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    return folder


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
        folder: Work folder (data, SFT output, predictions); a reused folder starts over.
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
    start = time.perf_counter()
    folder = fresh_folder(folder)
    train, test = write_seeing_task(folder / "data", task, n_train, n_test, seed=seed)
    model = f"tiny:{family}-{size}"
    rows = train_and_answer(folder, train, test, model, steps, lr=lr, batch_size=batch_size,
                            seed=seed, progress=progress)  # fmt: skip
    return SeeingResult(task, model, steps, _accuracy(rows["own"]), _accuracy(rows["swapped"]),
                        CHANCE[task], time.perf_counter() - start)  # fmt: skip


@dataclass(frozen=True)
class PhantomQuestions:
    """The questions of one phantom kind that a run asks, and on how many cases.

    Attributes:
        kind: ``chest``, ``fundus`` or ``knee`` (knee volumes reach the model as video frames).
        types: Answer types kept, among ``closed``, ``choice``, ``severity``, ``grounding``
            and ``open`` (`medvl.data.phantom_samples`).
        question: Keep only questions whose text holds this word (``""``: all).
        train_cases: Training cases (each gives several samples before the filters).
        test_cases: Held-out cases.
        val_cases: Validation cases (SFT's held-out loss; 0: none).
    """

    kind: str = "chest"
    types: tuple[str, ...] = ("closed",)
    question: str = ""
    train_cases: int = 800
    test_cases: int = 300
    val_cases: int = 0


def phantom_samples_of(
    folder: Path,
    parts: Sequence[PhantomQuestions],
    set_seed: int,
    difficulty: str,
    split: Literal["train", "val", "test"],
    progress: bool = False,
) -> list[Sample]:
    """Writes the cases of each part under ``folder`` and returns their samples that match.

    Args:
        folder: Where the scans go (the manifest that lists them should sit here).
        parts: What to ask of which kind; each part draws its cases from ``set_seed``.
        set_seed: Seeds the case set (`medvl.scans.phantoms.case_seed`): splits use different
            ones, so no held-out scan is a training scan.
        difficulty: A level of `medvl.scans.phantoms.chest.DIFFICULTIES` for chest cases (knee
            and fundus phantoms have one level).
        split: ``train``, ``val`` or ``test``: each part's ``train_cases``, ``val_cases`` or
            ``test_cases``; written in each sample's ``split``.
        progress: Show a tqdm bar over the cases.
    """
    from tqdm.auto import tqdm

    from medvl.data.phantom_samples import phantom_samples
    from medvl.scans.phantoms import PhantomJob, case_seed, make_and_write

    counts = [getattr(p, f"{split}_cases") for p in parts]
    jobs = [PhantomJob(p.kind, case_seed(set_seed, i), difficulty)
            for p, n in zip(parts, counts, strict=True) for i in range(n)]  # fmt: skip
    bar = tqdm(total=len(jobs), desc=f"{split} phantoms", disable=not progress)
    made = make_and_write(jobs, folder)

    def taken(n: int):
        for _ in range(n):
            case = next(made)
            bar.update()
            yield case

    kept = []
    try:
        for part, n in zip(parts, counts, strict=True):
            # Each part's samples share one answer balancer, as when the part is made alone.
            for s in phantom_samples(taken(n)):
                if s.answer_type in part.types and (
                    not part.question or part.question in s.question
                ):
                    kept.append(Sample.from_dict(s.to_dict() | {"split": split}))
    finally:
        made.close()  # shuts the workers down
        bar.close()
    return kept


def run_phantom_reading(
    folder: str | os.PathLike,
    difficulty: str = "easiest",
    n_train: int = 800,
    n_test: int = 100,
    types: Sequence[str] = ("closed",),
    question: str = "nodule",
    model: str = "tiny:qwen2_5_vl-tiny",
    steps: int = 1200,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    reasoning: bool = False,
) -> LearningTable:
    """Fine-tunes on chest phantoms at a difficulty level and builds the learning table.

    Training and held-out cases come from different seed sets, so no held-out scan was seen.

    Args:
        folder: Work folder; a reused folder starts over.
        difficulty: A level of `medvl.scans.phantoms.chest.DIFFICULTIES`.
        n_train: Training cases (each gives several samples).
        n_test: Held-out cases.
        types: Answer types kept, among ``closed``, ``choice``, ``severity`` and ``grounding``
            (which adds a box head).
        question: Keep only questions whose text holds this word (``""``: all).
        model: A model folder or ``tiny:<family>-<size>``.
        steps: SFT optimizer steps (20 warm-up steps, then cosine).
        lr: Peak learning rate.
        seed: Seeds the case sets, the training, the swap and the answers.
        progress: Show tqdm bars.
        reasoning: Train and answer with ``<think>`` reasoning (256 new tokens) or the answer
            alone (64).
    """
    folder = fresh_folder(folder)
    data = folder / "data"
    parts = [PhantomQuestions("chest", tuple(types), question, n_train, n_test)]
    train = phantom_samples_of(data, parts, 2 * seed + 1, difficulty, "train")
    test = phantom_samples_of(data, parts, 2 * seed + 2, difficulty, "test")
    train_path = write_manifest(data / "train.jsonl", train)
    test_path = write_manifest(data / "test.jsonl", test)
    rows = train_and_answer(
        folder, train_path, test_path, model, steps, lr=lr, warmup_steps=20, seed=seed,
        progress=progress, heads=["box"] if "grounding" in types else [], reasoning=reasoning,
        max_new_tokens=256 if reasoning else 64,
    )  # fmt: skip
    return learning_table(rows["own"], rows["swapped"], train, test, seed=seed)

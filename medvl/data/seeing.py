"""Two seeing tasks: is a bright disc in the picture, and which quadrant holds it.

They are the smallest questions whose answers are in the pixels: *presence* needs the image's
content to reach the answer, *quadrant* needs its content **and where it is**. A model that
answers the first and stays at chance on the second sees an unordered bag of image tokens (the
tiny builds did before `rope_theta` 10, see docs/learning.md). `bench/sees.py` trains and
evaluates on them through medvl's own dataset, SFT and evaluator.

Example:
    >>> train, test = write_seeing_task("runs/sees", "quadrant", n_train=160, n_test=40)
    >>> read_manifest(test)[0].options
    {'A': 'upper left', 'B': 'upper right', 'C': 'lower left', 'D': 'lower right'}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from medvl.data.manifest import write_manifest
from medvl.data.sample import Sample

__all__ = ["QUADRANTS", "SEEING_TASKS", "disc_picture", "seeing_samples", "write_seeing_task"]

SEEING_TASKS = ("presence", "quadrant")

QUADRANTS = {"A": "upper left", "B": "upper right", "C": "lower left", "D": "lower right"}
"""Option letter -> quadrant, in reading order; the letter's index gives (row, column) halves."""

PRESENCE_QUESTION = "Is there a bright disc in this image?"
QUADRANT_QUESTION = "Which quadrant of the image holds the bright disc?"


def disc_picture(
    size: int, center: tuple[float, float] | None, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A grey ``size`` x ``size`` uint8 picture: noise 60 +- 20, and a disc at 230 if any.

    Args:
        size: Side in pixels.
        center: (row, column) of the disc's centre, or None for no disc.
        radius: Disc radius in pixels.
        rng: Draws the noise.
    """
    picture = rng.normal(60.0, 20.0, (size, size))
    if center is not None:
        rows, cols = np.mgrid[:size, :size]
        picture[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2] = 230.0
    return np.clip(picture, 0, 255).astype(np.uint8)


def _quadrant_center(letter: str, size: int, radius: float, rng: np.random.Generator):
    index = "ABCD".index(letter)
    half = size / 2
    # Keep the whole disc inside its quadrant so that the answer is never ambiguous.
    low, high = radius + 1, half - radius - 1
    row = rng.uniform(low, high) + half * (index // 2)
    col = rng.uniform(low, high) + half * (index % 2)
    return row, col


def seeing_samples(
    folder: str | os.PathLike,
    task: Literal["presence", "quadrant"],
    n: int,
    split: str,
    size: int = 112,
    radius: float | None = None,
    seed: int = 0,
) -> list[Sample]:
    """Writes ``n`` disc pictures as PNG under ``folder/<split>/`` and returns their samples.

    Answers are balanced exactly (cycled over the options, then shuffled), so the most common
    answer scores chance: 1/2 for presence (closed yes/no), 1/4 for quadrant (choice A-D).

    Args:
        folder: The manifest's folder; image paths are relative to it.
        task: ``presence`` or ``quadrant``.
        n: Number of samples (one picture each).
        split: Written in each sample's ``split`` and used as the sub-folder.
        size: Picture side in pixels.
        radius: Disc radius; default ``size / 8`` (a quarter of a quadrant's side).
        seed: Seeds the pictures and the answer order.

    Returns:
        The samples, ids ``<task>-<split>-<index>``.
    """
    if task not in SEEING_TASKS:
        raise ValueError(f"task must be one of {SEEING_TASKS}, got {task!r}")
    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    radius = size / 8 if radius is None else radius
    answers = ["yes", "no"] if task == "presence" else list(QUADRANTS)
    order = [answers[i % len(answers)] for i in range(n)]
    rng.shuffle(order)
    samples = []
    for index, answer in enumerate(order):
        if task == "presence":
            margin = radius + 1
            center = tuple(rng.uniform(margin, size - margin, 2)) if answer == "yes" else None
        else:
            center = _quadrant_center(answer, size, radius, rng)
        image = f"{split}/{task}-{index:04d}.png"
        Image.fromarray(disc_picture(size, center, radius, rng)).save(folder / image)
        record = {
            "id": f"{task}-{split}-{index:04d}", "image": image, "modality": "synthetic",
            "anatomy": "disc", "answer": answer, "split": split, "source": "medvl-seeing",
        }  # fmt: skip
        if task == "presence":
            record |= {"question": PRESENCE_QUESTION, "answer_type": "closed"}
        else:
            record |= {"question": QUADRANT_QUESTION, "answer_type": "choice",
                       "options": dict(QUADRANTS)}  # fmt: skip
        samples.append(Sample.from_dict(record))
    return samples


def write_seeing_task(
    folder: str | os.PathLike,
    task: Literal["presence", "quadrant"],
    n_train: int = 160,
    n_test: int = 40,
    size: int = 112,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Writes a task's training and held-out pictures with one manifest each.

    The two splits draw from different seeds, so no held-out picture is a training picture.

    Returns:
        ``(train_manifest, test_manifest)``: ``folder/train.jsonl`` and ``folder/test.jsonl``.
    """
    folder = Path(folder)
    train = seeing_samples(folder, task, n_train, "train", size=size, seed=2 * seed)
    test = seeing_samples(folder, task, n_test, "test", size=size, seed=2 * seed + 1)
    return (write_manifest(folder / "train.jsonl", train),
            write_manifest(folder / "test.jsonl", test))  # fmt: skip

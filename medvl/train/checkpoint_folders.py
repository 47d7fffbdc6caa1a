"""Checkpoint folders in a run's ``output_dir``: their names, which are complete, the latest,
what ``--resume`` points at, and pruning. The contents of one checkpoint (writing, reading) are
`medvl.train.checkpoint`'s.

A checkpoint is ``checkpoint-<step>`` and is complete when its ``trainer_state.json`` exists
(written last); ``.tmp-checkpoint-<step>`` is one being written.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

__all__ = [
    "ACCELERATE_DIR",
    "PREFIX",
    "STATE_FILE",
    "TMP_PREFIX",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "resolve_resume",
]

PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
STATE_FILE = "trainer_state.json"
ACCELERATE_DIR = "accelerate"
_STEP = re.compile(rf"^{PREFIX}(\d+)$")


def _step_of(path: Path) -> int | None:
    match = _STEP.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest (lowest step) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and _step_of(p) is not None and (p / STATE_FILE).is_file()
    ]  # fmt: skip
    return sorted(found, key=_step_of)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(
    resume_from: str | os.PathLike | None, output_dir: str | os.PathLike
) -> Path | None:
    """``None`` -> None; ``"latest"`` -> the latest checkpoint of ``output_dir`` (None if there is
    none yet, so ``--resume`` also starts a fresh run); a path -> that checkpoint.

    Raises:
        FileNotFoundError: A path that is not a complete checkpoint.
    """
    if resume_from is None:
        return None
    if str(resume_from) == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Deletes all but the newest ``keep_last`` checkpoints (None or 0 keeps all)."""
    if not keep_last:
        return []
    old = list_checkpoints(output_dir)[:-keep_last]
    for path in old:
        shutil.rmtree(path)
    return old

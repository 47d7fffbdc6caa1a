"""A run's output folder: set up (stale temporaries cleared, the config saved), the training
log ``train_log.jsonl``, and the final model written atomically.

    outputs/sft/
        config.yaml            the config the run used (overrides included)
        train_log.jsonl        one JSON record per logged step (cut back on resume)
        checkpoint-<step>/     see `medvl.train.checkpoint`
        final/                 the trained model, loadable with `MedVLM.from_pretrained`
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvl._io import atomic_write_text, swap_in
from medvl.train.checkpoint_folders import resolve_resume

__all__ = ["LOG_FILE", "append_log", "remove_stale_tmp", "save_final", "start_run", "truncate_log"]

LOG_FILE = "train_log.jsonl"


def start_run(accelerator: Any, config: Any, output_dir: Path) -> Path | None:
    """Prepares ``output_dir`` for a run and returns the checkpoint to resume from, if any.

    The main process creates the folder, clears temporaries a crash left behind and saves the
    config actually used (``config.yaml``); then ``config.resume_from`` is resolved. Every
    process must call it.
    """
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(output_dir)
        config.save_yaml(output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    return resolve_resume(config.resume_from, output_dir)


def append_log(accelerator: Any, output_dir: Path, record: dict[str, float]) -> None:
    """Appends one logged record to ``output_dir/train_log.jsonl`` (main process only)."""
    if accelerator.is_main_process:
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Drops the lines of a JSONL log whose ``step`` is past ``step`` (and a half-written last
    line): a resumed run logs those steps again."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # the half line a killed run was writing
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def remove_stale_tmp(output_dir: str | os.PathLike) -> None:
    """Deletes the hidden temporary folders a crashed run left in ``output_dir``: ours
    (``.tmp-*``, `medvl._io.swap_in`'s ``.<name>.old-*``) and `MedVLM.save_pretrained`'s
    (``.<name>.tmp-*``). Main process only, before training starts."""
    root = Path(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            stale = p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)
            if stale and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def save_final(
    accelerator: Any, output_dir: Path, write_model: Callable[[Path], None], name: str = "final"
) -> Path:
    """Writes the trained model to ``output_dir/<name>`` atomically: ``write_model`` fills a
    temporary folder (main process only), which is then renamed into place. Every process
    must call it; returns the folder."""
    final = output_dir / name
    if accelerator.is_main_process:
        tmp = output_dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            write_model(tmp)
            swap_in(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final

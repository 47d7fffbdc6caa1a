"""Moving a finished MedVLM checkpoint folder into place without ever exposing half of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medvl._io import swap_in
from medvl.model.medvlm_config import CONFIG_NAME, HEADS_NAME

__all__ = ["publish"]

# What a save writes besides the processor: removed from a folder saved into again, so an old
# full model never sits beside a new adapter (or the reverse).
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors",
                 "adapter_model.safetensors", "adapter_config.json", HEADS_NAME)  # fmt: skip


def publish(tmp: Path, final: Path) -> None:
    """Move a finished checkpoint folder ``tmp`` to ``final``.

    A missing or empty ``final`` is replaced by one rename. Into an existing folder (a trainer's
    staging folder, an older checkpoint) the files are moved one by one, as transformers'
    ``save_pretrained`` keeps other files: the old ``medvl_config.json`` and weight files go
    first, the new ``medvl_config.json`` comes last, so the folder reads as a MedVLM checkpoint
    only when it is complete.
    """
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        swap_in(tmp, final)
        return
    (final / CONFIG_NAME).unlink(missing_ok=True)
    for pattern in _WEIGHT_FILES:
        for stale in final.glob(pattern):
            stale.unlink()
    for entry in sorted(tmp.iterdir(), key=lambda p: p.name == CONFIG_NAME):
        target = final / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()

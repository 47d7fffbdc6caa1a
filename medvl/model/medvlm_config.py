"""MedVLM's saved config: :class:`MedVLMConfig` (family, base model, heads, LoRA, prompt and
view settings, loss weights), saved as ``medvl_config.json``, the file that makes a folder a
MedVLM checkpoint; and :func:`heads_config_from` (head names -> a ``HeadsConfig``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.model.heads import HeadsConfig
from medvl.model.prompts import PromptSettings
from medvl.scans.views import ViewSettings

CONFIG_NAME = "medvl_config.json"
"""The file that makes a folder a MedVLM checkpoint; written last."""
HEADS_NAME = "heads.safetensors"

HEAD_NAMES = {"box": (2, 3), "box2d": (2,), "box3d": (3,), "mask": (), "seg": ()}
"""Names ``heads=[...]`` takes -> the box dimensions they add (``mask``/``seg``: a mask head)."""


@dataclass(kw_only=True)
class MedVLMConfig(ViewSettings):
    """What a MedVLM checkpoint needs besides weights; saved as ``medvl_config.json``.

    Attributes:
        family: ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``.
        base_model: Folder or hub id of the plain Qwen-VL model the weights started from (a
            LoRA checkpoint loads it, then the adapter).
        heads: ``HeadsConfig.to_dict()``, or None without heads.
        lora: The LoRA settings applied (JSON-safe), or None.
        reasoning: Prompt for ``<think>`` then ``<answer>``.
        view, n_frames, axis, size: How a volume is shown (`medvl.scans.views.ViewSettings`;
            training copies them from its dataset config).
        video_fps: Frame rate given to a volume's video.
        box_loss_weight: Weight of the box head loss in ``forward``'s total.
        mask_loss_weight: Weight of the mask head loss.
        init_token_rows: The grounding tokens' embedding rows were set to the mean embedding
            (redone when a LoRA checkpoint's base model is loaded).
    """

    family: str
    base_model: str
    heads: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None
    reasoning: bool = True
    video_fps: float = 2.0
    box_loss_weight: float = 1.0
    mask_loss_weight: float = 1.0
    init_token_rows: bool = False

    @property
    def prompt(self) -> PromptSettings:
        """The prompt and view settings."""
        return PromptSettings(**vars(self.view_settings), reasoning=self.reasoning,
                              video_fps=self.video_fps)  # fmt: skip

    @property
    def heads_config(self) -> HeadsConfig | None:
        """The heads' ``HeadsConfig`` (None without heads)."""
        return HeadsConfig.from_dict(self.heads) if self.heads else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MedVLMConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"unknown MedVLMConfig keys {unknown}; expected {sorted(known)}")
        return cls(**dict(data))

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``medvl_config.json`` into ``folder``."""
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MedVLMConfig:
        """Read ``medvl_config.json`` from ``folder``."""
        return cls.from_dict(json.loads((Path(folder) / CONFIG_NAME).read_text()))


def heads_config_from(heads: HeadsConfig | str | Sequence[str], hidden_size: int) -> HeadsConfig:
    """A ``HeadsConfig`` from one, or from names in :data:`HEAD_NAMES` (e.g. ``["box"]``)."""
    if isinstance(heads, HeadsConfig):
        if heads.hidden_size != hidden_size:
            raise ValueError(f"heads.hidden_size {heads.hidden_size} != the LM's {hidden_size}")
        return heads
    names = [heads] if isinstance(heads, str) else list(heads)
    if unknown := [h for h in names if h not in HEAD_NAMES]:
        raise ValueError(f"unknown heads {unknown}; choose from {sorted(HEAD_NAMES)}")
    dims = tuple(sorted({d for h in names for d in HEAD_NAMES[h]}))
    return HeadsConfig(hidden_size, box_dims=dims, mask=any(h in ("mask", "seg") for h in names))

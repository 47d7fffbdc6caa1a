"""MedVLM's saved config, and the set-up steps ``MedVLM.from_pretrained`` composes.

* :class:`MedVLMConfig`: family, base model, heads, LoRA, prompt settings, loss weights; saved
  as ``medvl_config.json``, the file that makes a folder a MedVLM checkpoint.
* Grounding tokens: :func:`add_grounding_tokens` (new tokens, embedding rows set to the mean
  embedding) and :func:`restore_grounding_tokens` (the same rows again under a LoRA adapter).
* LoRA: :func:`lora_config`, scoped to the language model.
* :func:`publish`: move a finished checkpoint into place without ever exposing half of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl._io import swap_in
from medvl.model.encoding import PromptSettings
from medvl.model.heads import HeadsConfig
from medvl.scans.views import ViewSettings

CONFIG_NAME = "medvl_config.json"
"""The file that makes a folder a MedVLM checkpoint; written last."""
HEADS_NAME = "heads.safetensors"

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's attention and MLP projections: LoRA's default targets."""
LORA_DEFAULTS: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
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


def token_ids(processor: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens the tokenizer must already hold."""
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks grounding tokens {list(tokens)}")
    return list(ids)


def _fit_embeddings(model: nn.Module, processor: Any) -> None:
    """Grow the embeddings only if the tokenizer outgrew them (Qwen-VL has spare rows)."""
    if len(processor.tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)


@torch.no_grad()
def _init_token_rows(model: nn.Module, ids: Sequence[int]) -> None:
    """Set new tokens' input (and untied output) rows to the mean of the older tokens' rows.

    Deterministic, unlike transformers' ``mean_resizing`` (which samples), so a LoRA checkpoint
    can rebuild the exact base rows its trainable-token deltas were learnt on.
    """
    first = min(ids)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        weight[list(ids)] = weight[:first].float().mean(0).to(weight.dtype)


def add_grounding_tokens(
    model: nn.Module, processor: Any, tokens: Sequence[str]
) -> tuple[list[int], bool]:
    """Add ``<|box|>`` / ``<|seg|>`` to the tokenizer (as special tokens) and fit the model.

    Returns:
        The tokens' ids, and whether they were new (then their rows were mean-initialised).
    """
    before = len(processor.tokenizer)
    processor.tokenizer.add_tokens(list(tokens), special_tokens=True)
    _fit_embeddings(model, processor)
    ids = token_ids(processor, tokens)
    added = len(processor.tokenizer) > before
    if added:
        _init_token_rows(model, ids)
    return ids, added


def restore_grounding_tokens(
    model: nn.Module, processor: Any, tokens: Sequence[str], init_rows: bool
) -> list[int]:
    """Prepare a base model for a LoRA adapter trained with grounding tokens: the tokenizer
    (from the checkpoint) has them; the base needs the rows (and their mean start) again."""
    _fit_embeddings(model, processor)
    ids = token_ids(processor, tokens)
    if init_rows:
        _init_token_rows(model, ids)
    return ids


def lm_target_modules(names: Sequence[str] = LM_PROJECTIONS) -> str:
    """A peft ``target_modules`` regex for these projections of the language model only.

    Plain names would also match the vision tower's MLP (Qwen2.5-VL's blocks have ``gate_proj``
    / ``up_proj`` / ``down_proj`` too).
    """
    return rf".*language_model.*\.({'|'.join(names)})"


def lora_config(lora: Any, trainable_ids: Sequence[int] = ()) -> Any:
    """A ``peft.LoraConfig`` from a config or dict, targeting the LM and the grounding tokens.

    Args:
        lora: ``LoraConfig`` or a dict of its arguments (:data:`LORA_DEFAULTS` fill the rest).
            ``target_modules`` None means :data:`LM_PROJECTIONS`; a list of names is scoped to
            the language model (:func:`lm_target_modules`); a string is a regex used as is.
        trainable_ids: Grounding-token ids whose embedding rows should train
            (``trainable_token_indices`` on ``embed_tokens``, unless set already).

    Returns:
        The ``LoraConfig``.
    """
    from peft import LoraConfig

    is_config = isinstance(lora, LoraConfig)
    settings = (
        {"target_modules": lora.target_modules,
         "trainable_token_indices": lora.trainable_token_indices}
        if is_config else {**LORA_DEFAULTS, **dict(lora)}
    )  # fmt: skip
    targets = settings.get("target_modules")
    if targets is None:
        settings["target_modules"] = lm_target_modules()
    elif not isinstance(targets, str):
        settings["target_modules"] = lm_target_modules(sorted(targets))
    if trainable_ids and settings.get("trainable_token_indices") is None:
        settings["trainable_token_indices"] = {"embed_tokens": list(trainable_ids)}
    return dataclasses.replace(lora, **settings) if is_config else LoraConfig(**settings)


def lora_summary(peft_config: Any) -> dict[str, Any]:
    """The LoRA settings worth recording, as JSON values."""
    keep = ("r", "lora_alpha", "lora_dropout", "target_modules", "trainable_token_indices",
            "bias", "use_rslora", "use_dora", "modules_to_save")  # fmt: skip
    data = {k: getattr(peft_config, k, None) for k in keep}
    text = json.dumps(data, default=lambda v: sorted(v) if isinstance(v, set) else str(v))
    return json.loads(text)


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

"""LoRA for a MedVLM, scoped to the language model (peft)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["LM_PROJECTIONS", "LORA_DEFAULTS", "lm_target_modules", "lora_config", "lora_summary"]

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's attention and MLP projections: LoRA's default targets."""
LORA_DEFAULTS: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}


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

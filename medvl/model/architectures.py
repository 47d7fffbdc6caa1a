"""The published architectures of the checkpoints the GPU recipes name, without their weights.

The recipes in ``configs/`` fine-tune Qwen2.5-VL-3B/7B and Qwen3-VL-4B/8B. Their weights are
downloads; their shapes are a few numbers, copied here from each checkpoint's ``config.json`` on
the Hugging Face Hub. With them a test checks a recipe offline (the model it names is built on
the ``meta`` device at full size: every shape, no memory), and a GPU benchmark trains the real
architecture from a random init::

    config = published_config("Qwen/Qwen2.5-VL-3B-Instruct", text_layers=4, vision_depth=4)
    model = random_init_model("Qwen/Qwen2.5-VL-3B-Instruct", device="meta")  # full size

Only the architecture is reproduced: the tokenizer and processor still come with the weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, PretrainedConfig

__all__ = ["PUBLISHED", "published_config", "random_init_model"]

_QWEN_IDS = {
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}  # fmt: skip

_QWEN2_5_VL_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "hidden_act": "silu", "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
}  # fmt: skip

_QWEN3_VL_TEXT = {
    "head_dim": 128, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 151936, "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000,
                        "mrope_section": [24, 20, 20], "mrope_interleaved": True},
}  # fmt: skip

_QWEN3_VL_VISION = {
    "hidden_act": "gelu_pytorch_tanh", "num_heads": 16, "patch_size": 16, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "num_position_embeddings": 2304,
}  # fmt: skip


def _qwen2_5_vl(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                vocab: int, tie: bool) -> dict[str, Any]:  # fmt: skip
    text = {
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0,
                            "mrope_section": [16, 24, 24]},
    }  # fmt: skip
    return {
        "model_type": "qwen2_5_vl", **_QWEN_IDS, "tie_word_embeddings": tie, "text_config": text,
        "vision_config": _QWEN2_5_VL_VISION | {"out_hidden_size": hidden},
    }  # fmt: skip


def _qwen3_vl(hidden: int, intermediate: int, tie: bool, vision: dict[str, Any]) -> dict[str, Any]:
    text = _QWEN3_VL_TEXT | {"hidden_size": hidden, "intermediate_size": intermediate}
    return {
        "model_type": "qwen3_vl", **_QWEN_IDS, "tie_word_embeddings": tie, "text_config": text,
        "vision_config": _QWEN3_VL_VISION | vision | {"out_hidden_size": hidden},
    }  # fmt: skip


PUBLISHED: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": _qwen2_5_vl(2048, 11008, 36, 16, 2, 151936, tie=True),
    "Qwen/Qwen2.5-VL-7B-Instruct": _qwen2_5_vl(3584, 18944, 28, 28, 4, 152064, tie=False),
    "Qwen/Qwen3-VL-4B-Instruct": _qwen3_vl(2560, 9728, tie=True, vision={
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096,
        "deepstack_visual_indexes": [5, 11, 17]}),
    "Qwen/Qwen3-VL-8B-Instruct": _qwen3_vl(4096, 12288, tie=False, vision={
        "depth": 27, "hidden_size": 1152, "intermediate_size": 4304,
        "deepstack_visual_indexes": [8, 16, 24]}),
}  # fmt: skip
"""Hub id -> the ``config.json`` fields that fix the architecture (Qwen's published values)."""


def published_config(
    name: str, text_layers: int | None = None, vision_depth: int | None = None
) -> PretrainedConfig:
    """Transformers' config of a published checkpoint's architecture, optionally shallower.

    Args:
        name: A key of `PUBLISHED` (``Qwen/Qwen2.5-VL-3B-Instruct``, ...).
        text_layers: Language-model layers to keep (None: all). Widths, vocabulary and heads
            stay the published ones, so memory per layer and per token is the real model's.
        vision_depth: Vision blocks to keep (None: all); the full-attention and deepstack
            block indices are kept where they still exist.

    Raises:
        KeyError: ``name`` is not in `PUBLISHED` (the message lists what is).
    """
    if name not in PUBLISHED:
        raise KeyError(f"no published architecture for {name!r}; known: {', '.join(PUBLISHED)}")
    fields = copy.deepcopy(PUBLISHED[name])
    if text_layers is not None:
        fields["text_config"]["num_hidden_layers"] = text_layers
    vision = fields["vision_config"]
    if vision_depth is not None:
        vision["depth"] = vision_depth
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if key in vision:
                vision[key] = [i for i in vision[key] if i < vision_depth]
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **fields)


def random_init_model(
    name: str,
    text_layers: int | None = None,
    vision_depth: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """A random-init model of a published architecture (see `published_config`).

    With ``device="meta"`` nothing is allocated: the full-size 7B builds in a second and its
    parameter count and shapes can be checked.
    """
    config = published_config(name, text_layers, vision_depth)
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(config, dtype=dtype)

"""medvl.model.lora: LoRA settings scoped to the language model."""

from __future__ import annotations

import re

from peft import LoraConfig

from medvl.model.lora import LM_PROJECTIONS, lm_target_modules, lora_config, lora_summary


def test_targets_are_the_language_model_projections_only():
    pattern = lm_target_modules()
    assert re.fullmatch(pattern, "model.language_model.layers.0.mlp.gate_proj")
    # Qwen2.5-VL's vision blocks have gate/up/down projections too: they must not match.
    assert not re.fullmatch(pattern, "model.visual.blocks.0.mlp.gate_proj")
    assert all(re.fullmatch(pattern, f"model.language_model.x.{n}") for n in LM_PROJECTIONS)


def test_a_dict_gets_the_defaults_and_the_grounding_token_rows():
    config = lora_config({"r": 4, "target_modules": ["v_proj", "q_proj"]}, trainable_ids=[7, 8])
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 32, 0.05)
    assert config.target_modules == lm_target_modules(["q_proj", "v_proj"])
    assert config.trainable_token_indices == {"embed_tokens": [7, 8]}
    regex = lora_config({"target_modules": r".*q_proj"})
    assert regex.target_modules == r".*q_proj" and regex.trainable_token_indices is None


def test_a_lora_config_keeps_its_own_settings_and_the_summary_is_json():
    given = LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"])
    config = lora_config(given, trainable_ids=[3])
    assert config.r == 2 and config.lora_alpha == 4
    assert config.target_modules == lm_target_modules(["k_proj"])
    summary = lora_summary(config)
    assert summary["r"] == 2 and summary["trainable_token_indices"] == {"embed_tokens": [3]}
    assert summary["target_modules"] == lm_target_modules(["k_proj"])

"""medvl.train.train_config: the fields SFT and GRPO share, declared and checked once."""

from __future__ import annotations

import dataclasses

import pytest

from medvl.train.grpo_config import GRPOConfig
from medvl.train.sft_config import SFTConfig
from medvl.train.train_config import TrainConfig

SHARED = {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("kind", [SFTConfig, GRPOConfig])
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train_manifest": ""}, "train_manifest is required"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"keep_last": 0}, "keep_last must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0 and warmup_steps >= 0"),
        ({"warmup_steps": -1}, "lr must be > 0 and warmup_steps >= 0"),
    ],
)
def test_both_trainers_check_the_shared_fields_alike(kind, override, message):
    with pytest.raises(ValueError, match=message):
        kind(**({"train_manifest": "m.jsonl"} | override))


def test_each_config_keeps_its_own_defaults_on_the_shared_fields():
    sft, grpo = SFTConfig(train_manifest="m.jsonl"), GRPOConfig(train_manifest="m.jsonl")
    assert {f.name for f in dataclasses.fields(SFTConfig)} >= SHARED
    assert {f.name for f in dataclasses.fields(GRPOConfig)} >= SHARED
    assert (sft.output_dir, sft.lr, sft.lr_scheduler, sft.max_steps) == (
        "outputs/sft", 2e-5, "cosine", None
    )
    assert (grpo.output_dir, grpo.lr, grpo.lr_scheduler, grpo.max_steps) == (
        "outputs/grpo", 1e-6, "constant", 100
    )
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        SFTConfig(train_manifest="m.jsonl", num_epochs=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        GRPOConfig(train_manifest="m.jsonl", temperature=0.0)

"""Small pieces the GRPO tests share (tests/train/test_grpo*.py)."""

from __future__ import annotations

from pathlib import Path

from medvl.data.dataset import DatasetConfig
from medvl.train.grpo import GRPOConfig

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def low_ids(completions, completion_ids, **kwargs) -> list[float]:
    """Toy verifiable reward: the fraction of completion tokens with an id below 64 (of 512)."""
    return [sum(1 for i in ids if i < 64) / max(len(ids), 1) for ids in completion_ids]


def constant(completions, **kwargs) -> list[float]:
    return [1.0] * len(completions)


def make_config(manifest: Path, model: Path, out: Path, **changes) -> GRPOConfig:
    settings = dict(
        model=str(model), train_manifest=str(manifest), dataset=DatasetConfig(size=32),
        output_dir=str(out), lora=LORA, max_steps=1, batch_size=2, num_generations=4,
        max_new_tokens=8, lr=1e-2, beta=0.04, save_every=None, seed=0, report_to="none",
        progress=False,
    )  # fmt: skip
    settings.update(changes)
    return GRPOConfig(**settings)

"""`GRPOConfig`: every setting of a GRPO run, loadable from YAML.

The config half of the TRL-shaped pair (`medvl.train.grpo.GRPOTrainer` is the other half). Field
names follow `SFTConfig` where they mean the same thing and TRL's ``GRPOConfig`` for the GRPO
ones (``num_generations``, ``beta``, ``epsilon``, ``reward_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medvl.config import YamlConfig
from medvl.data.dataset import DatasetConfig

__all__ = ["REWARD_NAMES", "GRPOConfig"]

REWARD_NAMES = ("format", "accuracy", "box_iou", "severity", "reasoning_length")
"""Names ``rewards`` accepts (see `medvl.train.rewards`)."""


@dataclass
class GRPOConfig(YamlConfig):
    """Everything a GRPO run needs; load it with `GRPOConfig.from_yaml` (see `medvl.config`).

    Attributes:
        model: A model folder / hub id for `MedVLM.from_pretrained`, or ``tiny:<family>-<size>``.
        train_manifest: JSONL manifest of the prompts (each Sample is one GRPO group).
        dataset: How scans are preprocessed and shown (`DatasetConfig`).
        max_train_samples: Use only the first N samples (None: all).
        output_dir: Checkpoints, ``final/``, ``config.yaml``, ``train_log.jsonl``.
        lora: peft LoRA settings, or None for full fine-tuning. With LoRA the reference model
            for the KL term is the same model with its adapters disabled (no second copy);
            with full fine-tuning and ``beta > 0`` a frozen copy of the start model is kept.
        heads: Grounding heads the model is loaded with (GRPO trains only the language model
            through the reward; heads get no gradient from it).
        dtype: Dtype the model weights are loaded in.
        lr: Learning rate (after the warm-up).
        weight_decay: AdamW weight decay (matrices only).
        betas: AdamW betas.
        adam_epsilon: AdamW epsilon.
        warmup_steps: Linear warm-up, in optimizer steps.
        lr_scheduler: ``constant``, ``cosine`` or ``linear`` (transformers' ``get_scheduler``).
        max_steps: Optimizer steps (one per batch of prompts).
        batch_size: Prompts per optimizer step (per process); each gets ``num_generations``
            completions.
        num_generations: G, completions per prompt (>= 2: advantages are relative to the group).
        max_new_tokens: Longest completion.
        temperature: Sampling temperature of the rollouts.
        top_p: Nucleus sampling of the rollouts (1.0: off). Set explicitly because Qwen-VL
            checkpoints ship near-greedy generation defaults.
        top_k: Top-k sampling of the rollouts (0: off).
        beta: KL coefficient (k3 estimator against the reference model); 0 skips the reference
            forward entirely.
        epsilon: PPO clip range of the ratio.
        rewards: Reward names, from ``format``, ``accuracy``, ``box_iou``, ``severity``,
            ``reasoning_length`` (`medvl.train.rewards`).
        reward_weights: One weight per reward (None: all 1.0). A reward's None for a row (it
            does not apply) counts as 0 for that row.
        max_grad_norm: Gradient clipping (None: off).
        save_every: Checkpoint every N optimizer steps (None: only at the end).
        keep_last: Checkpoints kept (None: all).
        log_every: Log every N optimizer steps.
        seed: Seeds new weights, data order and sampling.
        report_to: ``tensorboard`` or ``none``; ``train_log.jsonl`` is written either way.
        run_name: Tracker run name.
        resume_from: ``"latest"`` or a checkpoint folder; None starts fresh.
        progress: Show a tqdm bar (main process only).
    """

    model: str = "tiny:qwen2_5_vl-tiny"
    train_manifest: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    max_train_samples: int | None = None
    output_dir: str = "outputs/grpo"
    lora: dict[str, Any] | None = None
    heads: list[str] = field(default_factory=list)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0
    lr_scheduler: Literal["cosine", "linear", "constant"] = "constant"
    max_steps: int = 100
    batch_size: int = 1
    num_generations: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.04
    epsilon: float = 0.2
    rewards: list[str] = field(default_factory=lambda: ["format", "accuracy"])
    reward_weights: list[float] | None = None
    max_grad_norm: float | None = 1.0
    save_every: int | None = 100
    keep_last: int | None = 3
    log_every: int = 1
    seed: int = 42
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    run_name: str = "grpo"
    resume_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.train_manifest:
            raise ValueError("train_manifest is required")
        positive = {
            "batch_size": self.batch_size, "max_steps": self.max_steps,
            "max_new_tokens": self.max_new_tokens, "log_every": self.log_every,
            "save_every": self.save_every, "keep_last": self.keep_last,
        }  # fmt: skip
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or null where allowed), got {value}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2, got {self.num_generations}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be > 0, warmup_steps >= 0")
        if self.beta < 0 or self.epsilon < 0:
            raise ValueError("beta and epsilon must be >= 0")
        unknown = [r for r in self.rewards if r not in REWARD_NAMES]
        if unknown:
            raise ValueError(f"unknown rewards {unknown}; valid: {', '.join(REWARD_NAMES)}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} values for "
                f"{len(self.rewards)} rewards"
            )

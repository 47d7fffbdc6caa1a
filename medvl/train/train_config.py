"""`TrainConfig`: the settings every medvl trainer shares (model, data, optimizer, schedule,
checkpoints, logging, resume). `SFTConfig` and `GRPOConfig` add their own and change defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medvl.config import YamlConfig
from medvl.data.dataset import DatasetConfig

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig(YamlConfig):
    """Shared settings of a training run; see `SFTConfig` and `GRPOConfig`.

    Attributes:
        model: A model folder / hub id for `MedVLM.from_pretrained`, or ``tiny:<family>-<size>``
            (e.g. ``tiny:qwen2_5_vl-tiny``) for `medvl.model.build_tiny_model`.
        train_manifest: JSONL manifest of training samples.
        dataset: How scans are preprocessed and shown (`DatasetConfig`: view, n_frames,
            preset, cache...).
        max_train_samples: Use only the first N training samples (None: all).
        output_dir: Checkpoints, ``final/``, ``config.yaml``, ``train_log.jsonl``.
        lora: peft LoRA settings (``r``, ``lora_alpha``, ``target_modules``...) or None for full
            fine-tuning.
        heads: Grounding heads to add (e.g. ``["box"]``).
        dtype: Dtype the model weights are loaded in.
        lr: Peak learning rate (after the warm-up).
        weight_decay: AdamW weight decay (matrices only; biases and norms are not decayed).
        betas: AdamW betas.
        adam_epsilon: AdamW epsilon.
        warmup_steps: Linear warm-up, in optimizer steps.
        lr_scheduler: ``cosine``, ``linear`` or ``constant`` (after the warm-up), via
            transformers' ``get_scheduler``.
        max_steps: Optimizer steps.
        batch_size: Micro-batch size per process.
        max_grad_norm: Gradient clipping (None: off).
        save_every: Checkpoint every N optimizer steps (None: only at the end).
        keep_last: Checkpoints kept (None: all).
        log_every: Log every N optimizer steps.
        seed: Seeds weights of new modules, the data order and every RNG.
        report_to: ``tensorboard`` (accelerate tracker, logs under ``output_dir/<run_name>``) or
            ``none``. ``train_log.jsonl`` is written either way.
        run_name: Tracker run name.
        resume_from: ``"latest"`` (the newest checkpoint in ``output_dir``, or a fresh start if
            none) or a checkpoint folder; None starts fresh.
        progress: Show a tqdm bar (main process only).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate's autocast).
        gradient_checkpointing: Trade compute for memory in the language model (GRPO then
            computes log-probs with full forwards: a checkpointed forward keeps no KV cache to
            share).
    """

    model: str = "tiny:qwen2_5_vl-tiny"
    train_manifest: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    max_train_samples: int | None = None
    output_dir: str = "outputs/train"
    lora: dict[str, Any] | None = None
    heads: list[str] = field(default_factory=list)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_steps: int | None = None
    batch_size: int = 1
    max_grad_norm: float | None = 1.0
    save_every: int | None = 500
    keep_last: int | None = 3
    log_every: int = 10
    seed: int = 42
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    run_name: str = "train"
    resume_from: str | None = None
    progress: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not self.train_manifest:
            raise ValueError("train_manifest is required")
        self._check_positive(
            batch_size=self.batch_size, max_steps=self.max_steps, log_every=self.log_every,
            save_every=self.save_every, keep_last=self.keep_last,
        )  # fmt: skip
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0 and warmup_steps >= 0")

    @staticmethod
    def _check_positive(**values: int | None) -> None:
        for name, value in values.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or null where allowed), got {value}")

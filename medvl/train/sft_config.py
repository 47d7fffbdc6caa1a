"""`SFTConfig`: every setting of a supervised fine-tuning run, loadable from YAML.

The config half of the TRL-shaped pair (`medvl.train.sft.SFTTrainer` is the other half).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medvl.config import YamlConfig
from medvl.data.dataset import DatasetConfig

__all__ = ["SFTConfig"]


@dataclass
class SFTConfig(YamlConfig):
    """Everything an SFT run needs; load it with `SFTConfig.from_yaml` (see `medvl.config`).

    Attributes:
        model: A model folder / hub id for `MedVLM.from_pretrained`, or ``tiny:<family>-<size>``
            (e.g. ``tiny:qwen2_5_vl-tiny``) for `medvl.model.build_tiny_model`.
        train_manifest: JSONL manifest of training samples.
        eval_manifest: Optional manifest for the eval loss.
        dataset: How scans are preprocessed and shown (`DatasetConfig`: view, n_frames,
            preset, cache...).
        max_train_samples: Use only the first N training samples (None: all).
        max_eval_samples: Use only the first N eval samples (None: all).
        output_dir: Checkpoints, ``final/``, ``config.yaml``, logs.
        lora: peft LoRA settings (``r``, ``lora_alpha``, ``target_modules``...) or None for full
            fine-tuning.
        heads: Grounding heads to add and train (e.g. ``["box"]``).
        reasoning: Train replies with ``<think>`` reasoning then the answer (True), the answer
            alone (False), or as the model's config says (None); saved in the model's config,
            so the fine-tuned model is asked the way it was trained.
        dtype: Dtype the model weights are loaded in.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (matrices only; biases and norms are not decayed).
        betas: AdamW betas.
        adam_epsilon: AdamW epsilon.
        warmup_steps: Linear warm-up, in optimizer steps.
        lr_scheduler: ``cosine``, ``linear`` or ``constant`` (after the warm-up), via
            transformers' ``get_scheduler``.
        max_steps: Optimizer steps; None trains ``num_epochs`` epochs.
        num_epochs: Epochs when ``max_steps`` is None.
        batch_size: Micro-batch size per process.
        eval_batch_size: Per process; default ``batch_size``.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        max_grad_norm: Gradient clipping (None: off).
        save_every: Checkpoint every N optimizer steps (None: only at the end).
        keep_last: Checkpoints kept (None: all).
        log_every: Log every N optimizer steps.
        eval_every: Eval loss every N optimizer steps (None: only at the end, if there is an
            eval manifest).
        seed: Seeds weights of new modules, the data order and every RNG.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate's autocast).
        box_loss_weight: Weight of the box head loss.
        mask_loss_weight: Weight of the mask head loss.
        report_to: ``tensorboard`` (accelerate tracker, logs under ``output_dir/<run_name>``) or
            ``none``. ``train_log.jsonl`` is written either way.
        run_name: Tracker run name.
        num_workers: DataLoader worker processes.
        gradient_checkpointing: Trade compute for memory in the language model.
        resume_from: ``"latest"`` (the newest checkpoint in ``output_dir``, or a fresh start if
            none) or a checkpoint folder; None starts fresh.
        progress: Show a tqdm bar (main process only).
    """

    model: str = "tiny:qwen2_5_vl-tiny"
    train_manifest: str = ""
    eval_manifest: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    output_dir: str = "outputs/sft"
    lora: dict[str, Any] | None = None
    heads: list[str] = field(default_factory=list)
    reasoning: bool | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_steps: int | None = None
    num_epochs: int = 1
    batch_size: int = 1
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    save_every: int | None = 500
    keep_last: int | None = 3
    log_every: int = 10
    eval_every: int | None = None
    seed: int = 42
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    box_loss_weight: float = 1.0
    mask_loss_weight: float = 1.0
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    run_name: str = "sft"
    num_workers: int = 0
    gradient_checkpointing: bool = False
    resume_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.train_manifest:
            raise ValueError("train_manifest is required")
        positive = {
            "batch_size": self.batch_size, "num_epochs": self.num_epochs,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "log_every": self.log_every, "max_steps": self.max_steps,
            "save_every": self.save_every, "eval_every": self.eval_every,
            "eval_batch_size": self.eval_batch_size, "keep_last": self.keep_last,
        }  # fmt: skip
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or null where allowed), got {value}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("lr must be > 0 and warmup_steps >= 0")

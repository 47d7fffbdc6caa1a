"""`SFTConfig`: every setting of a supervised fine-tuning run, loadable from YAML.

The config half of the TRL-shaped pair (`medvl.train.sft.SFTTrainer` is the other half).
"""

from __future__ import annotations

from dataclasses import dataclass

from medvl.train.train_config import TrainConfig

__all__ = ["SFTConfig"]


@dataclass
class SFTConfig(TrainConfig):
    """Everything an SFT run needs; load it with `SFTConfig.from_yaml` (see `medvl.config`).

    The shared fields (model, data, optimizer, schedule, checkpoints, logging, resume) are
    `TrainConfig`'s. SFT adds:

    Attributes:
        eval_manifest: Optional manifest for the eval loss.
        max_eval_samples: Use only the first N eval samples (None: all).
        reasoning: Train replies with ``<think>`` reasoning then the answer (True), the answer
            alone (False), or as the model's config says (None); saved in the model's config,
            so the fine-tuned model is asked the way it was trained.
        max_steps: Optimizer steps; None trains ``num_epochs`` epochs.
        num_epochs: Epochs when ``max_steps`` is None.
        eval_batch_size: Per process; default ``batch_size``.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        eval_every: Eval loss every N optimizer steps (None: only at the end, if there is an
            eval manifest).
        box_loss_weight: Weight of the box head loss.
        mask_loss_weight: Weight of the mask head loss.
        num_workers: DataLoader worker processes.
    """

    output_dir: str = "outputs/sft"
    run_name: str = "sft"
    eval_manifest: str | None = None
    max_eval_samples: int | None = None
    reasoning: bool | None = None
    num_epochs: int = 1
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    eval_every: int | None = None
    box_loss_weight: float = 1.0
    mask_loss_weight: float = 1.0
    num_workers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive(
            num_epochs=self.num_epochs, eval_every=self.eval_every,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            eval_batch_size=self.eval_batch_size,
        )  # fmt: skip

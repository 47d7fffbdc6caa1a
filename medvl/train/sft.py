"""Supervised fine-tuning of a `MedVLM` on manifests: `SFTConfig` and `SFTTrainer`.

The pair follows TRL's shape (a config dataclass, a trainer taking it) on `accelerate`, so the
same script runs on a CPU and under ``accelerate launch`` on many GPUs::

    config = SFTConfig.from_yaml("configs/sft_tiny.yaml", ["--lr", "1e-4"])
    final_dir = SFTTrainer(config).train()

or ``python -m medvl.train.sft --config configs/sft_tiny.yaml --lr 1e-4 [--resume]``.

The loss is the language-model loss on the assistant turn (`MedVLM.collate` masks everything
else) plus ``box_loss_weight * box_loss + mask_loss_weight * mask_loss`` from the grounding heads.
Checkpoints (`medvl.train.checkpoint`) are written every ``save_every`` optimizer steps and at
the end; ``resume_from="latest"`` continues exactly where the last one stopped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medvl.config import config_main
from medvl.data.dataset import MedVLDataset
from medvl.train.data_order import EpochSampler
from medvl.train.run_folder import start_run
from medvl.train.sft_config import SFTConfig
from medvl.train.trainer import Trainer, expand_resume, subset

__all__ = ["SFTConfig", "SFTTrainer", "run_sft"]

logger = logging.getLogger(__name__)


class SFTTrainer(Trainer):
    """Fine-tunes a `MedVLM` with accelerate: LoRA or full, gradient accumulation, mixed
    precision, schedules, eval loss, TensorBoard, atomic checkpoints and exact resume.

    Args:
        config: The run's settings.
        model: A `MedVLM` (default: `load_model(config)`).
        train_dataset: Items for `MedVLM.collate` (default: `MedVLDataset` of
            ``config.train_manifest``).
        eval_dataset: Same for the eval loss (default: from ``config.eval_manifest``).
    """

    def __init__(
        self,
        config: SFTConfig,
        model: Any = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
    ) -> None:
        model = self._start(
            config, model, gradient_accumulation_steps=config.gradient_accumulation_steps
        )
        if train_dataset is None:
            train_dataset = MedVLDataset(config.train_manifest, config.dataset)
        if eval_dataset is None and config.eval_manifest:
            eval_dataset = MedVLDataset(config.eval_manifest, config.dataset)
        self.train_dataset = subset(train_dataset, config.max_train_samples)
        self.eval_dataset = (
            None if eval_dataset is None else subset(eval_dataset, config.max_eval_samples)
        )
        self.sampler = EpochSampler(len(self.train_dataset), seed=config.seed)
        # The loader's own generator: DataLoader iterators otherwise draw a seed from the global
        # torch RNG, and a resumed run creates its iterator at a different moment.
        # `collator` is MedVLM.collate without the model, picklable for worker processes.
        collate = getattr(model, "collator", None) or model.collate
        loader = DataLoader(
            self.train_dataset, batch_size=config.batch_size, sampler=self.sampler,
            collate_fn=collate, num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )  # fmt: skip
        self._prepare(model, loader, len(self.train_dataset))
        accum = config.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(len(self.train_loader) / accum)
        self._start_schedule(config.max_steps or config.num_epochs * self.steps_per_epoch)
        self.eval_loader = None
        if self.eval_dataset is not None:
            self.eval_loader = self.accelerator.prepare(DataLoader(
                self.eval_dataset, batch_size=config.eval_batch_size or config.batch_size,
                collate_fn=collate, num_workers=config.num_workers,
            ))  # fmt: skip

    def _sync_model_config(self, model_config: Any) -> None:
        """Make the saved model answer the way it was trained: loss weights, view settings and
        whether replies reason first."""
        super()._sync_model_config(model_config)
        if self.config.reasoning is not None:
            model_config.reasoning = self.config.reasoning
        model_config.box_loss_weight = self.config.box_loss_weight
        model_config.mask_loss_weight = self.config.mask_loss_weight

    # -- the loop ---------------------------------------------------------------------------

    def _loss(self, out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's total loss (weights synced from the config in ``__init__``) and its
        parts, detached, for logging."""
        logged = {
            k: v.detach() for k in ("lm_loss", "box_loss", "mask_loss")
            if (v := getattr(out, k, None)) is not None
        }  # fmt: skip
        logged["loss"] = out.loss.detach()
        return out.loss, logged

    def train(self) -> Path:
        """Trains to ``max_steps`` (resuming if ``config.resume_from`` says so), writes
        ``output_dir/final`` and returns it."""
        acc, cfg = self.accelerator, self.config
        resume = start_run(acc, cfg, self.output_dir)
        if resume is not None:
            self._resume(resume)
        acc.init_trackers(cfg.run_name, config=cfg.to_flat_dict())
        bar = tqdm(
            total=self.max_steps, initial=self.state.global_step, desc="sft", unit="step",
            disable=not (acc.is_main_process and cfg.progress), dynamic_ncols=True,
        )  # fmt: skip
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        micro = 0
        st = self.state
        batches = self._batches()
        while st.global_step < self.max_steps:
            batch = next(batches)
            with acc.accumulate(self.model):
                loss, logged = self._loss(self.model(**batch))
                acc.backward(loss)
                grad_norm = None
                if acc.sync_gradients and cfg.max_grad_norm is not None:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            micro += 1
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            if not acc.sync_gradients:
                continue
            st.global_step += 1
            bar.update(1)
            if st.global_step % cfg.log_every == 0 or st.global_step == self.max_steps:
                record = self._log(sums, micro, grad_norm)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                sums, micro = {}, 0
            if self.eval_loader is not None and cfg.eval_every \
                    and st.global_step % cfg.eval_every == 0:  # fmt: skip
                self.evaluate()
            if st.global_step < self.max_steps and cfg.save_every \
                    and st.global_step % cfg.save_every == 0:  # fmt: skip
                self.save_checkpoint()
        bar.close()
        if self.eval_loader is not None and not (
            cfg.eval_every and self.max_steps % cfg.eval_every == 0
        ):
            self.evaluate()
        if self._saved_step != st.global_step:
            self.save_checkpoint()
        final = self.save_final()
        acc.end_training()
        return final

    def _log(self, sums: dict[str, torch.Tensor], micro: int, grad_norm: Any) -> dict[str, float]:
        acc = self.accelerator
        record: dict[str, float] = {"step": self.state.global_step}
        for key, total in sums.items():
            mean = acc.reduce(total.detach().reshape(1) / max(micro, 1), reduction="mean")
            record[key] = float(mean)
        record["lr"] = float(self.scheduler.get_last_lr()[0])
        record["epoch"] = self.state.epoch + self.state.batches_in_epoch / max(
            len(self.train_loader), 1
        )
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        self._record(record, "train")
        return record

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over the eval set (all processes): ``{"step", "eval_loss",
        "eval_lm_loss", ...}``, also logged as ``eval/loss``..."""
        if self.eval_loader is None:
            raise ValueError("no eval dataset (set eval_manifest)")
        acc = self.accelerator
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        for batch in self.eval_loader:
            _, logged = self._loss(self.model(**batch))
            n = len(batch["input_ids"]) if "input_ids" in batch else 1
            for key, value in logged.items():
                # One copy per sample: gather_for_metrics drops the padding samples that
                # even batches add on the last batch, which a per-batch mean could not.
                got = acc.gather_for_metrics(value.float().reshape(1).repeat(n))
                totals[key] = totals.get(key, 0.0) + float(got.sum())
            count += int(acc.gather_for_metrics(torch.full((n,), 1.0, device=acc.device)).sum())
        self.model.train()
        record = {"step": self.state.global_step}
        record.update({f"eval_{k}": v / max(count, 1) for k, v in totals.items()})
        self._record(record, prefix="eval")
        return record


def run_sft(config_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Runs SFT from a YAML config and CLI-style overrides; returns ``output_dir/final``.

    ``--resume`` alone means ``--resume_from latest``; ``--resume PATH`` a given checkpoint.
    This is what ``medvl sft --config X [--lr 1e-5 ...] [--resume]`` calls.

    Raises:
        ConfigError: A bad config file or override (the message names the key).
    """
    config = SFTConfig.from_yaml(config_path, expand_resume(overrides))
    return SFTTrainer(config).train()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medvl.train.sft --config FILE [--key value ...] [--resume]``."""
    return config_main(run_sft, "medvl.train.sft", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())

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
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from medvl.config import config_main
from medvl.data.dataset import MedVLDataset
from medvl.train.checkpoint import (
    LOG_FILE,
    EpochSampler,
    TrainerState,
    append_log,
    load_checkpoint,
    register_trainable_state_hooks,
    save_checkpoint,
    save_final,
    start_run,
    truncate_log,
)
from medvl.train.sft_config import SFTConfig

__all__ = ["SFTConfig", "SFTTrainer", "expand_resume", "load_model", "run_sft"]

logger = logging.getLogger(__name__)

FINAL_DIR = "final"


def load_model(config: SFTConfig) -> Any:
    """The `MedVLM` that ``config`` names, with its LoRA and heads (weights of new modules are
    drawn from the current torch RNG: seed first)."""
    from medvl.model.medvl_model import MedVLM

    return MedVLM.from_pretrained(
        config.model, lora=config.lora, heads=config.heads or None, dtype=config.dtype
    )


def _subset(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


class SFTTrainer:
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
        self.config = config
        self.output_dir = Path(config.output_dir)
        tensorboard = config.report_to == "tensorboard" and bool(find_spec("tensorboard"))
        if config.report_to == "tensorboard" and not tensorboard:
            logger.warning("report_to=tensorboard but tensorboard is not installed; not logging")
        self.accelerator = acc = Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            log_with="tensorboard" if tensorboard else None,
            project_dir=str(self.output_dir),
        )
        set_seed(config.seed)  # before the model: new LoRA/head weights come from this RNG
        model = model if model is not None else load_model(config)
        _sync_model_config(model, config)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if train_dataset is None:
            train_dataset = MedVLDataset(config.train_manifest, config.dataset)
        if eval_dataset is None and config.eval_manifest:
            eval_dataset = MedVLDataset(config.eval_manifest, config.dataset)
        self.train_dataset = _subset(train_dataset, config.max_train_samples)
        self.eval_dataset = (
            None if eval_dataset is None else _subset(eval_dataset, config.max_eval_samples)
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
        optimizer = torch.optim.AdamW(
            self._param_groups(model), lr=config.lr, betas=config.betas, eps=config.adam_epsilon
        )
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, loader)
        accum = config.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(len(self.train_loader) / accum)
        self.max_steps = config.max_steps or config.num_epochs * self.steps_per_epoch
        self.scheduler = acc.prepare(self._scheduler(self.optimizer))
        self.eval_loader = None
        if self.eval_dataset is not None:
            self.eval_loader = acc.prepare(DataLoader(
                self.eval_dataset, batch_size=config.eval_batch_size or config.batch_size,
                collate_fn=collate, num_workers=config.num_workers,
            ))  # fmt: skip
        register_trainable_state_hooks(acc)
        self.state = TrainerState(
            sampler_seed=config.seed, dataset_size=len(self.train_dataset),
            num_processes=acc.num_processes, max_steps=self.max_steps,
        )  # fmt: skip
        self.history: list[dict[str, float]] = []
        self._saved_step: int | None = None

    def _param_groups(self, model: Any) -> list[dict[str, Any]]:
        params = [p for p in model.trainable_parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        # Decaying biases and norm gains only shrinks them toward 0; the usual exclusion.
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        from transformers import get_scheduler

        name = self.config.lr_scheduler
        if name == "constant" and self.config.warmup_steps:
            name = "constant_with_warmup"
        # accelerate steps a prepared scheduler once per process per optimizer step.
        n = self.accelerator.num_processes
        return get_scheduler(
            name, optimizer,
            num_warmup_steps=self.config.warmup_steps * n,
            num_training_steps=self.max_steps * n,
        )  # fmt: skip

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
        while st.global_step < self.max_steps:
            self.train_loader.set_epoch(st.epoch)
            loader = self.train_loader
            if st.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, st.batches_in_epoch)
            for batch in loader:
                with acc.accumulate(self.model):
                    loss, logged = self._loss(self.model(**batch))
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and cfg.max_grad_norm is not None:
                        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                st.batches_in_epoch += 1
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
                if (
                    self.eval_loader is not None
                    and cfg.eval_every
                    and (st.global_step % cfg.eval_every == 0)
                ):
                    self.evaluate()
                if st.global_step >= self.max_steps:
                    break
                if cfg.save_every and st.global_step % cfg.save_every == 0:
                    self.save_checkpoint()
            else:  # the epoch ran out
                st.epoch, st.batches_in_epoch = st.epoch + 1, 0
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
        self._record(record, prefix="train")
        return record

    def _record(self, record: dict[str, float], prefix: str) -> None:
        """Keeps ``record`` in `history`, sends it to the trackers as ``<prefix>/<key>`` and
        appends it to ``train_log.jsonl`` (eval keys start with ``eval_`` there)."""
        self.history.append(record)
        acc = self.accelerator
        step = int(record["step"])
        values = {k.removeprefix("eval_"): v for k, v in record.items() if k != "step"}
        acc.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)
        append_log(acc, self.output_dir, record)

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

    # -- checkpoints ------------------------------------------------------------------------

    def _write_model(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(folder)
        self.config.save_yaml(folder / "config.yaml")

    def save_checkpoint(self) -> Path:
        """Writes ``output_dir/checkpoint-<step>`` (all processes must call it)."""
        path = save_checkpoint(
            self.accelerator, self.output_dir, self.state, self._write_model, self.config.keep_last
        )
        self._saved_step = self.state.global_step
        return path

    def save_final(self) -> Path:
        """Writes the trained model and its config to ``output_dir/final`` atomically (main
        process) and returns the folder."""
        return save_final(self.accelerator, self.output_dir, self._write_model, FINAL_DIR)

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(self.accelerator, path)
        if state.dataset_size != len(self.train_dataset):
            logger.warning(
                "%s was trained on %d samples, this run has %d: the data order differs",
                path, state.dataset_size, len(self.train_dataset),
            )  # fmt: skip
        changed = _changed_keys(path / "config.yaml", self.config)
        if changed:
            logger.warning("resuming with a changed config (%s): not an exact resume", changed)
        if state.batches_in_epoch >= len(self.train_loader):  # saved right at an epoch's end
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        state.max_steps, state.num_processes = self.max_steps, self.accelerator.num_processes
        self.state = state
        self._saved_step = state.global_step
        if self.accelerator.is_main_process:
            truncate_log(self.output_dir / LOG_FILE, state.global_step)
        logger.info("resumed from %s at step %d", path, state.global_step)


# Keys that may change on resume without changing the trajectory.
_FREE_KEYS = ("resume_from", "output_dir", "progress", "report_to", "run_name", "log_every",
              "save_every", "keep_last", "eval_every", "num_workers")  # fmt: skip


def _changed_keys(saved: Path, config: SFTConfig) -> str:
    """Keys whose value differs from the checkpoint's config, e.g. ``"lr, batch_size"``."""
    try:
        before = SFTConfig.from_yaml(saved).to_flat_dict()
    except (OSError, ValueError):
        return "unreadable checkpoint config"
    now = config.to_flat_dict()
    keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return ", ".join(k for k in keys if k.split(".")[0] not in _FREE_KEYS)


def _sync_model_config(model: Any, config: SFTConfig) -> None:
    """Make the saved model answer the way it was trained: loss weights, view settings and
    whether replies reason first."""
    mc = getattr(model, "config", None)
    if not hasattr(mc, "set_view"):  # not a MedVLM (a plain module from a test or a user)
        return
    if config.reasoning is not None:
        mc.reasoning = config.reasoning
    mc.box_loss_weight, mc.mask_loss_weight = config.box_loss_weight, config.mask_loss_weight
    mc.set_view(config.dataset)


def run_sft(config_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Runs SFT from a YAML config and CLI-style overrides; returns ``output_dir/final``.

    ``--resume`` alone means ``--resume_from latest``; ``--resume PATH`` a given checkpoint.
    This is what ``medvl sft --config X [--lr 1e-5 ...] [--resume]`` calls.

    Raises:
        ConfigError: A bad config file or override (the message names the key).
    """
    config = SFTConfig.from_yaml(config_path, expand_resume(overrides))
    return SFTTrainer(config).train()


def expand_resume(args: Sequence[str]) -> list[str]:
    """``--resume`` -> ``--resume_from latest``; ``--resume PATH`` -> ``--resume_from PATH``."""
    args = list(args)
    if "--resume" in args:
        i = args.index("--resume")
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        args[i : i + 1] = ["--resume_from"] if has_value else ["--resume_from", "latest"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medvl.train.sft --config FILE [--key value ...] [--resume]``."""
    return config_main(run_sft, "medvl.train.sft", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())

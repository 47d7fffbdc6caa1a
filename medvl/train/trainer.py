"""`Trainer`: what `SFTTrainer` and `GRPOTrainer` share on accelerate.

Loading the model (seeded, its config synced to the data), the AdamW optimizer (no decay on
biases and norms), the warm-up schedule, logging (trackers and ``train_log.jsonl``), atomic
checkpoints, the final model and exact resume. Each trainer adds its data and its loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import Dataset, Subset

from medvl.train.checkpoint import (
    TrainerState,
    load_checkpoint,
    register_trainable_state_hooks,
    save_checkpoint,
)
from medvl.train.run_folder import LOG_FILE, append_log, save_final, truncate_log
from medvl.train.train_config import TrainConfig

__all__ = ["FINAL_DIR", "Trainer", "expand_resume", "holds_adapter", "load_model"]

logger = logging.getLogger(__name__)

FINAL_DIR = "final"

# Keys that may change on resume without changing the trajectory.
_FREE_KEYS = ("resume_from", "output_dir", "progress", "report_to", "run_name", "log_every",
              "save_every", "keep_last", "eval_every", "num_workers")  # fmt: skip


def holds_adapter(model: str) -> bool:
    """Whether ``model`` is a folder with a LoRA adapter (a medvl LoRA checkpoint)."""
    return (Path(model).expanduser() / "adapter_config.json").is_file()


def load_model(config: TrainConfig) -> Any:
    """The `MedVLM` that ``config`` names, with its LoRA and heads (weights of new modules are
    drawn from the current torch RNG: seed first).

    A checkpoint that holds a LoRA adapter (an SFT output's ``final/``) keeps training that
    adapter: ``config.lora`` is then not used (a second adapter on top is not supported).
    """
    from medvl.model.medvlm import MedVLM

    lora = config.lora
    if lora is not None and holds_adapter(config.model):
        logger.info("%s holds a LoRA adapter: training continues it; the lora settings "
                    "are not used", config.model)  # fmt: skip
        lora = None
    return MedVLM.from_pretrained(
        config.model, lora=lora, heads=config.heads or None, dtype=config.dtype
    )


def expand_resume(args: Sequence[str]) -> list[str]:
    """``--resume`` -> ``--resume_from latest``; ``--resume PATH`` -> ``--resume_from PATH``."""
    args = list(args)
    if "--resume" in args:
        i = args.index("--resume")
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        args[i : i + 1] = ["--resume_from"] if has_value else ["--resume_from", "latest"]
    return args


def subset(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items of ``dataset`` (all when None)."""
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


class Trainer:
    """The shared half of medvl's trainers; subclasses set up data and write ``train``.

    A subclass's ``__init__`` calls, in order: `_start` (accelerator, seed, model), builds its
    data loader, `_prepare` (optimizer, scheduler, state), and sets ``self.max_steps`` before.
    """

    config: TrainConfig
    max_steps: int

    def _start(self, config: TrainConfig, model: Any, **accelerator_kwargs: Any) -> Any:
        """Sets ``config``, ``output_dir`` and ``accelerator``; seeds; returns the model
        (``model`` or `load_model`), its config synced with `_sync_model_config`."""
        self.config = config
        self.output_dir = Path(config.output_dir)
        tensorboard = config.report_to == "tensorboard" and bool(find_spec("tensorboard"))
        if config.report_to == "tensorboard" and not tensorboard:
            logger.warning("report_to=tensorboard but tensorboard is not installed; not logging")
        self.accelerator = Accelerator(
            log_with="tensorboard" if tensorboard else None, project_dir=str(self.output_dir),
            mixed_precision=config.mixed_precision, **accelerator_kwargs,
        )  # fmt: skip
        set_seed(config.seed)  # before the model: new LoRA/head weights come from this RNG
        model = model if model is not None else load_model(config)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if hasattr(getattr(model, "config", None), "set_view"):  # a MedVLM's config
            self._sync_model_config(model.config)
        return model

    def _sync_model_config(self, model_config: Any) -> None:
        """Make the saved model answer the way it was trained (here: the view settings)."""
        model_config.set_view(self.config.dataset)

    def _prepare(self, model: Any, loader: Any, dataset_size: int) -> None:
        """AdamW over the trainable parameters, the schedule, accelerate's ``prepare``, and a
        fresh `TrainerState`; sets ``model``, ``optimizer``, ``train_loader``, ``scheduler``."""
        acc, cfg = self.accelerator, self.config
        # One fused kernel per step instead of a dozen small ops per tensor (HF Trainer's
        # default too); on the devices PyTorch has it for.
        fused = acc.device.type in ("cpu", "cuda") or None
        optimizer = torch.optim.AdamW(
            self._param_groups(model), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_epsilon,
            fused=fused,
        )  # fmt: skip
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, loader)
        register_trainable_state_hooks(acc)
        self.history: list[dict[str, float]] = []
        self._saved_step: int | None = None
        self.state = TrainerState(
            sampler_seed=cfg.seed, dataset_size=dataset_size,
            num_processes=acc.num_processes, max_steps=0,
        )  # fmt: skip

    def _start_schedule(self, max_steps: int, updates_per_step: int = 1) -> None:
        """Sets ``max_steps`` and the prepared ``scheduler`` (once the loader's length is known);
        the schedule spans ``max_steps * updates_per_step`` optimizer updates."""
        self.max_steps = self.state.max_steps = max_steps
        self._updates_per_step = updates_per_step
        self.scheduler = self.accelerator.prepare(self._scheduler(self.optimizer))

    def _batches(self) -> Iterator[Any]:
        """Training batches without end, epoch after epoch, from where the state says.

        ``state.batches_in_epoch`` counts a batch as it is handed out, so a checkpoint saved
        after the step that used it resumes at the next one (`accelerate`'s
        ``skip_first_batches``)."""
        st, acc = self.state, self.accelerator
        while True:
            self.train_loader.set_epoch(st.epoch)
            loader = self.train_loader
            if st.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, st.batches_in_epoch)
            for batch in loader:
                st.batches_in_epoch += 1
                yield batch
            st.epoch, st.batches_in_epoch = st.epoch + 1, 0

    def _param_groups(self, model: Any) -> list[dict[str, Any]]:
        params = [p for p in model.trainable_parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        # Decaying biases and norm gains only shrinks them toward 0; the usual exclusion.
        decay = self.config.weight_decay
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
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
            num_training_steps=self.max_steps * self._updates_per_step * n,
        )  # fmt: skip

    @property
    def vlm(self) -> Any:
        """The `MedVLM` without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)

    # -- logging ----------------------------------------------------------------------------

    def _record(self, record: dict[str, float], prefix: str = "train") -> None:
        """Keeps ``record`` in `history`, sends it to the trackers as ``<prefix>/<key>`` and
        appends it to ``train_log.jsonl`` (eval keys start with ``eval_`` there)."""
        self.history.append(record)
        acc = self.accelerator
        step = int(record["step"])
        values = {k.removeprefix("eval_"): v for k, v in record.items() if k != "step"}
        acc.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)
        append_log(acc, self.output_dir, record)

    # -- checkpoints ------------------------------------------------------------------------

    def _write_model(self, folder: Path) -> None:
        self.vlm.save_pretrained(folder)
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
        if state.dataset_size != self.state.dataset_size:  # ours: this run's data
            logger.warning(
                "%s was trained on %d samples, this run has %d: the data order differs",
                path, state.dataset_size, self.state.dataset_size,
            )  # fmt: skip
        changed = self._changed_keys(path / "config.yaml")
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

    def _changed_keys(self, saved: Path) -> str:
        """Keys whose value differs from the checkpoint's config, e.g. ``"lr, batch_size"``."""
        try:
            before = type(self.config).from_yaml(saved).to_flat_dict()
        except (OSError, ValueError):
            return "unreadable checkpoint config"
        now = self.config.to_flat_dict()
        keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        return ", ".join(k for k in keys if k.split(".")[0] not in _FREE_KEYS)

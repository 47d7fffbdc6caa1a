"""Atomic training checkpoints with the state for an exact resume: writing and reading one.
Finding, choosing and pruning them in a run folder is `medvl.train.checkpoint_folders`.

A checkpoint is a folder ``<output_dir>/checkpoint-<step>``::

    checkpoint-200/
        (model files)          what the trainer's ``write_model`` puts there: for SFT, the
                               `MedVLM.save_pretrained` output (model or LoRA adapter, processor,
                               heads), so the folder loads as a model
        config.yaml            the training config used (overrides included)
        trainer_state.json     step, epoch, batches consumed in the epoch, sampler seed
        accelerate/            `Accelerator.save_state`: trainable weights in their training
                               dtype (model.safetensors), optimizer.bin, scheduler.bin,
                               random_states_<rank>.pkl, scaler.pt under fp16

Why both model files and ``accelerate/model.safetensors``: the first is the deliverable (loadable
on its own); the second holds exactly the tensors the optimizer updates, so the resume does not
depend on how the model serialises itself. Only trainable parameters go there (a pre-save hook
filters accelerate's full state dict), so a LoRA run stores megabytes, not the frozen base model;
full fine-tuning stores the weights twice.

What ``Accelerator.save_state`` covers: model, optimizer, LR scheduler, GradScaler, each rank's
RNG states (python, numpy, torch CPU, every CUDA device) and its micro-step counter (so gradient
accumulation resumes in phase). What it does not, and this module adds:

* the data position: ``(epoch, batches_in_epoch)`` and the seed of
  `medvl.train.data_order.EpochSampler`, from which the resumed run rebuilds the epoch's order
  and skips the consumed batches;
* the global step and epoch (``trainer_state.json``) and the config;
* a trap: every DataLoader iterator draws a seed from the global torch RNG when it is created,
  which a resumed run does at another moment; the trainer gives its loader its own generator.

Atomicity: every process writes into ``.tmp-checkpoint-<step>`` (a fixed name, so all ranks
agree on it), the main process renames it into place with `os.replace` once everything is on
disk, and a failed write removes it. A crash (even SIGKILL) therefore leaves either a complete
``checkpoint-<step>`` or a hidden temporary folder, which the next run deletes
(`medvl.train.run_folder.remove_stale_tmp`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from medvl._io import atomic_write_text, swap_in
from medvl.train.checkpoint_folders import (
    ACCELERATE_DIR,
    PREFIX,
    STATE_FILE,
    TMP_PREFIX,
    prune_checkpoints,
)

__all__ = [
    "STATE_FILE",
    "TrainerState",
    "load_checkpoint",
    "register_trainable_state_hooks",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class TrainerState:
    """Where training stands: saved as ``trainer_state.json`` in each checkpoint.

    Attributes:
        global_step: Optimizer steps done.
        epoch: Current epoch (0-based).
        batches_in_epoch: Micro-batches of ``epoch`` consumed by each process.
        sampler_seed: `EpochSampler` seed; the epoch's permutation is ``randperm(seed + epoch)``.
        dataset_size: Training samples, to detect a changed dataset on resume.
        num_processes: Processes of the run that wrote the checkpoint.
        max_steps: Planned optimizer steps.
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    sampler_seed: int = 0
    dataset_size: int = 0
    num_processes: int = 1
    max_steps: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def register_trainable_state_hooks(accelerator: Any) -> None:
    """Makes ``accelerator.save_state``/``load_state`` store only trainable parameters.

    Accelerate would otherwise write the whole state dict, frozen base model included. The
    load hook loads the file itself and takes the models off accelerate's list, after checking
    that every trainable parameter was in it (a silent partial load would break exactness).
    Under FSDP and DeepSpeed accelerate saves models its own way and these hooks see no weights.
    """

    def keep_trainable(models: list, weights: list, output_dir: str) -> None:
        for i, model in enumerate(models[: len(weights)]):
            names = _trainable_names(model)
            weights[i] = {k: v for k, v in weights[i].items() if k in names}

    def load_trainable(models: list, input_dir: str) -> None:
        for i, model in enumerate(models):
            file = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            state = load_file(file)
            missing = _trainable_names(model) - state.keys()
            result = model.load_state_dict(state, strict=False)
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"{file} does not match the model: missing trainable {sorted(missing)[:5]}, "
                    f"unexpected {result.unexpected_keys[:5]}"
                )
        models.clear()  # loaded here: accelerate must not load them again

    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def save_checkpoint(
    accelerator: Any,
    output_dir: str | os.PathLike,
    state: TrainerState,
    write_files: Callable[[Path], None],
    keep_last: int | None = None,
) -> Path:
    """Writes ``checkpoint-<state.global_step>`` atomically; call it on every process.

    Args:
        accelerator: The run's `accelerate.Accelerator` (models, optimizers and schedulers
            prepared; `register_trainable_state_hooks` called).
        output_dir: Where checkpoints live.
        state: Trainer state to record.
        write_files: Called on the main process with the temporary folder, to write the model
            files and the config.
        keep_last: Checkpoints to keep after this one is in place (None or 0: all).

    Returns:
        The checkpoint folder.
    """
    root = Path(output_dir)
    final = root / f"{PREFIX}{state.global_step}"
    tmp = root / f"{TMP_PREFIX}{state.global_step}"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        # Every process writes its own RNG state here; the main one the rest.
        accelerator.save_state(str(tmp / ACCELERATE_DIR))
        if main:
            write_files(tmp)
            # Written last: its presence is what `list_checkpoints` calls complete.
            atomic_write_text(tmp / STATE_FILE, state.to_json())
        accelerator.wait_for_everyone()
        if main:
            swap_in(tmp, final)
            prune_checkpoints(root, keep_last)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | os.PathLike) -> TrainerState:
    """Restores trainable weights, optimizer, scheduler, scaler and RNG states from ``path``
    (call it on every process, after ``accelerator.prepare``); returns its `TrainerState`."""
    path = Path(path)
    state = TrainerState.from_json((path / STATE_FILE).read_text(encoding="utf-8"))
    if state.num_processes != accelerator.num_processes:
        # RNG files are per process and the batch sharding differs: the data order and any
        # randomness after the resume will differ from an uninterrupted run.
        logger.warning(
            "%s was written by %d processes, resuming with %d: the resume is not exact",
            path, state.num_processes, accelerator.num_processes,
        )  # fmt: skip
    accelerator.load_state(str(path / ACCELERATE_DIR))
    return state

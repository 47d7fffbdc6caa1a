"""Atomic training checkpoints with the state for an exact resume.

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

* the data position. Accelerate saves a sampler only for iterable datasets, and a DataLoader's
  position only with torchdata's stateful loader. The trainer shuffles with `EpochSampler` (a
  permutation drawn from ``seed + epoch``), so ``(epoch, batches_in_epoch)`` plus the seed pin
  down the next batch; the resumed run rebuilds that epoch's permutation and skips the consumed
  batches with ``accelerator.skip_first_batches``;
* the global step and epoch (``trainer_state.json``) and the config;
* a trap: every DataLoader iterator draws a seed from the global torch RNG when it is created,
  which a resumed run does at another moment; the trainer gives its loader its own generator.

Atomicity: every process writes into ``.tmp-checkpoint-<step>`` (a fixed name, so all ranks
agree on it), the main process renames it into place with `os.replace` once everything is on
disk, and a failed write removes it. A crash (even SIGKILL) therefore leaves either a complete
``checkpoint-<step>`` or a hidden temporary folder, which the next run deletes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from medvl._io import atomic_write_text, swap_in

__all__ = [
    "EpochSampler",
    "TrainerState",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "register_trainable_state_hooks",
    "remove_stale_tmp",
    "resolve_resume",
    "save_checkpoint",
    "truncate_log",
]

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
STATE_FILE = "trainer_state.json"
ACCELERATE_DIR = "accelerate"
_STEP = re.compile(rf"^{PREFIX}(\d+)$")


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles ``range(n)`` with a permutation that depends only on ``(seed, epoch)``.

    A plain `RandomSampler` draws from a generator whose state after a crash is lost; here any
    epoch's order can be rebuilt from two integers. Accelerate calls `set_epoch` through its
    dataloader wrappers (and shards the batches across processes after this sampler), so every
    process sees the same permutation.

    Args:
        n: Dataset length.
        seed: Base seed.
        shuffle: False gives ``0..n-1`` every epoch (evaluation).
    """

    # No ``generator`` attribute on purpose: accelerate would re-seed it from the global RNG.
    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch``."""
        self.epoch = epoch

    def permutation(self, epoch: int | None = None) -> list[int]:
        """The order of ``epoch`` (default: the current one)."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation())

    def __len__(self) -> int:
        return self.n


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


def _step_of(path: Path) -> int | None:
    match = _STEP.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest (lowest step) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and _step_of(p) is not None and (p / STATE_FILE).is_file()
    ]  # fmt: skip
    return sorted(found, key=_step_of)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(
    resume_from: str | os.PathLike | None, output_dir: str | os.PathLike
) -> Path | None:
    """``None`` -> None; ``"latest"`` -> the latest checkpoint of ``output_dir`` (None if there is
    none yet, so ``--resume`` also starts a fresh run); a path -> that checkpoint.

    Raises:
        FileNotFoundError: A path that is not a complete checkpoint.
    """
    if resume_from is None:
        return None
    if str(resume_from) == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def remove_stale_tmp(output_dir: str | os.PathLike) -> None:
    """Deletes the hidden temporary folders a crashed run left in ``output_dir``: ours
    (``.tmp-*``, `medvl._io.swap_in`'s ``.<name>.old-*``) and `MedVLM.save_pretrained`'s
    (``.<name>.tmp-*``). Main process only, before training starts."""
    root = Path(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            stale = p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)
            if stale and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Deletes all but the newest ``keep_last`` checkpoints (None or 0 keeps all)."""
    if not keep_last:
        return []
    old = list_checkpoints(output_dir)[:-keep_last]
    for path in old:
        shutil.rmtree(path)
    return old


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Drops the lines of a JSONL log whose ``step`` is past ``step`` (and a half-written last
    line): a resumed run logs those steps again."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # the half line a killed run was writing
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))


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


LOG_FILE = "train_log.jsonl"


def start_run(accelerator: Any, config: Any, output_dir: Path) -> Path | None:
    """Prepares ``output_dir`` for a run and returns the checkpoint to resume from, if any.

    The main process creates the folder, clears temporaries a crash left behind and saves the
    config actually used (``config.yaml``); then ``config.resume_from`` is resolved. Every
    process must call it.
    """
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(output_dir)
        config.save_yaml(output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    return resolve_resume(config.resume_from, output_dir)


def append_log(accelerator: Any, output_dir: Path, record: dict[str, float]) -> None:
    """Appends one logged record to ``output_dir/train_log.jsonl`` (main process only)."""
    if accelerator.is_main_process:
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def save_final(
    accelerator: Any, output_dir: Path, write_model: Callable[[Path], None], name: str = "final"
) -> Path:
    """Writes the trained model to ``output_dir/<name>`` atomically: ``write_model`` fills a
    temporary folder (main process only), which is then renamed into place. Every process
    must call it; returns the folder."""
    final = output_dir / name
    if accelerator.is_main_process:
        tmp = output_dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            write_model(tmp)
            swap_in(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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

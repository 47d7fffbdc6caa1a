"""Evaluation split across processes: each writes its own shard, the main process merges.

Under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1), `medvl.eval.runner.evaluate`
gives process k the samples ``k, k + n, k + 2n, ...`` of the manifest, writes its lines to
``<output stem>.rank<k><suffix>`` (appended and fsynced batch by batch, as a single process
writes the output itself), waits for the others, and process 0 merges the output and every
shard into the output in manifest order (written to a temporary file and renamed) and removes
the shards. A crash loses at most each process's batch in flight: a rerun reads the output and
the shards left behind and answers only what none of them holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvl._io import atomic_write_text
from medvl.eval.predictions import read_predictions

__all__ = ["Processes", "merge_shards", "processes", "shard_path", "shard_paths"]


class Processes:
    """This process's place among the evaluation's processes."""

    def __init__(self, state: Any = None) -> None:
        self.state = state
        self.index = 0 if state is None else int(state.process_index)
        self.count = 1 if state is None else int(state.num_processes)
        self.local_index = 0 if state is None else int(state.local_process_index)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        """A barrier (nothing with one process)."""
        if self.state is not None:
            self.state.wait_for_everyone()


def processes() -> Processes:
    """accelerate's `PartialState` when launched with several processes, else one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # On CPU, accelerate starts the gloo group only when told it runs on CPU.
    return Processes(PartialState(cpu=not torch.cuda.is_available()))


def shard_path(output: Path, rank: int) -> Path:
    """Where process ``rank`` writes: ``<stem>.rank<rank><suffix>`` beside the output."""
    return output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def shard_paths(output: Path) -> list[Path]:
    """The shards beside ``output`` (left by this run or an interrupted one)."""
    return sorted(output.parent.glob(f"{output.stem}.rank*{output.suffix}"))


def merge_shards(output: Path, order: Sequence[str]) -> Path:
    """Merge ``output`` and its shards into ``output``, ids in ``order`` first (the manifest's),
    each id once (the first line read wins), then remove the shards."""
    rows: dict[str, dict] = {}
    for path in [output, *shard_paths(output)]:
        for row in read_predictions(path, repair=True) if path.is_file() else []:
            rows.setdefault(str(row["id"]), row)
    rank = {sample_id: i for i, sample_id in enumerate(order)}
    ordered = sorted(rows.values(), key=lambda r: rank.get(str(r["id"]), len(rank)))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
    atomic_write_text(output, text)
    for path in shard_paths(output):
        path.unlink()
    return output

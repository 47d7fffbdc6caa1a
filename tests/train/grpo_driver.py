"""Runs GRPO from a YAML config in its own process, for the SIGKILL-resume and torchrun tests.

``python tests/train/grpo_driver.py CONFIG [--key value ...] [--resume]``; environment:
``KILL_AFTER_CHECKPOINT=k`` SIGKILLs the process right after checkpoint k is written. The
reward has spread in every group (the share of token ids below 64), except on rank 1 of a
multi-process run, where every completion scores 1.0: that rank's groups all skip their
backward. Each rank writes its trainable weights and its history beside the run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from medvl.train.grpo import GRPOConfig, GRPOTrainer
from medvl.train.trainer import expand_resume


def by_rank(completions, completion_ids, **kwargs) -> list[float]:
    if dist.is_initialized() and dist.get_rank() == 1:
        return [1.0] * len(completions)
    return [sum(1 for i in ids if i < 64) / max(len(ids), 1) for ids in completion_ids]


class KilledTrainer(GRPOTrainer):
    def save_checkpoint(self) -> Path:
        path = super().save_checkpoint()
        if self.state.global_step == int(os.environ.get("KILL_AFTER_CHECKPOINT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        return path


def main(argv: list[str]) -> None:
    config = GRPOConfig.from_yaml(argv[0], expand_resume(argv[1:]))
    trainer = KilledTrainer(config, reward_funcs=[by_rank])
    trainer.train()
    rank, out = trainer.accelerator.process_index, Path(config.output_dir)
    weights = {n: p.detach().cpu() for n, p in trainer.vlm.named_parameters() if p.requires_grad}
    torch.save(weights, out / f"weights-rank{rank}.pt")
    (out / f"history-rank{rank}.json").write_text(json.dumps(trainer.history))


if __name__ == "__main__":
    main(sys.argv[1:])

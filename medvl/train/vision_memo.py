"""Run a frozen vision tower once per scan per GRPO step.

A GRPO step passes each prompt through the model two or three times (the rollout, the policy's
log-probs, the reference's), and each pass would encode the scan again. When the vision tower
does not train (LoRA on the language model, or frozen), its output for a scan is the same in
every pass, so :func:`vision_once` keeps it: inside the context the first call for a given
pixel tensor runs the tower and later calls with the same tensor reuse that output. A tower
with a trainable parameter is left alone (its output must carry the gradient of each pass).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from medvl.train.logprobs import _vlm

__all__ = ["vision_once"]


@contextmanager
def vision_once(model: nn.Module) -> Iterator[bool]:
    """Within the context, a frozen vision tower encodes each pixel tensor once.

    Args:
        model: A Qwen-VL model (optionally peft- or DDP-wrapped).

    Yields:
        True when the outputs are reused (the tower is frozen), False when it runs every time.
    """
    visual = _vlm(model).model.visual
    if any(p.requires_grad for p in visual.parameters()):
        yield False
        return
    original = visual.forward
    memo: dict[tuple, Any] = {}

    def forward(pixels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        grid = kwargs.get("grid_thw", args[0] if args else None)
        key = (pixels.data_ptr(), tuple(pixels.shape), None if grid is None else
               tuple(grid.flatten().tolist()))  # fmt: skip
        if key not in memo:
            with torch.no_grad():
                memo[key] = (pixels, original(pixels, *args, **kwargs))
        # A shallow copy: the caller replaces fields of the output (the split pooler output).
        return copy.copy(memo[key][1])

    visual.forward = forward  # an instance attribute shadows the class's forward
    try:
        yield True
    finally:
        del visual.forward

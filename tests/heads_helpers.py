"""Helpers of the grounding-head tests (tests/model/heads/)."""

from __future__ import annotations

import torch

HIDDEN = 64  # the tiny models' LM hidden size


def scramble(module: torch.nn.Module, std: float = 1.0, seed: int = 0) -> None:
    """Random weights: heads start with zeroed output layers, which make the checks trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def random_boxes(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` valid normalised boxes (min corner first) in ``dim`` dimensions."""
    corners = torch.rand(n, 2, dim, generator=gen)
    return torch.cat([corners.min(1).values, corners.max(1).values], dim=-1)

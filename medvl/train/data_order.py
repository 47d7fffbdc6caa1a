"""The data order of a training run: a shuffle that a resumed run can rebuild exactly.

Accelerate saves a sampler only for iterable datasets, and a DataLoader's position only with
torchdata's stateful loader. The trainers shuffle with `EpochSampler` (a permutation drawn from
``seed + epoch``), so ``(epoch, batches_in_epoch)`` in `medvl.train.checkpoint.TrainerState`
plus the seed pin down the next batch; the resumed run rebuilds that epoch's permutation and
skips the consumed batches with ``accelerator.skip_first_batches``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["EpochSampler"]


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

"""medvl.train.data_order: an epoch's shuffle rebuilt from (seed, epoch) alone."""

from __future__ import annotations

from medvl.train.data_order import EpochSampler


def test_an_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(50, seed=7), EpochSampler(50, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    order = list(a)
    assert order == list(b) and sorted(order) == list(range(50))
    b.set_epoch(4)
    assert list(b) != order and sorted(b) == list(range(50))
    assert list(EpochSampler(50, seed=8)) != list(EpochSampler(50, seed=7))
    assert len(a) == 50

"""medvl.model.heads.box and the box loss: valid 2D/3D boxes, GIoU by hand, fitting boxes."""

from __future__ import annotations

import pytest
import torch
from heads_helpers import HIDDEN, random_boxes, scramble

from medvl.model.heads import (
    BoxHead,
    box_loss,
)
from medvl.scans.boxes import paired_box_iou

# --- boxes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_box_head_outputs_valid_boxes_for_any_input(dim):
    head = BoxHead(HIDDEN, dim=dim)
    scramble(head, std=3.0)  # saturates sigmoids: corners overshoot before the clamp
    states = torch.randn(512, HIDDEN) * 10
    boxes = head(states)
    assert boxes.shape == (512, 2 * dim)
    lower, upper = boxes[:, :dim], boxes[:, dim:]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (lower <= upper).all()
    assert (lower == 0).any() and (upper == 1).any()  # clamping really happened
    # Clamped corners still pass gradients (straight-through), so L1 can pull them back in; a
    # plain clamp would give exactly zero here.
    clamped = (boxes == 0) | (boxes == 1)
    (boxes * clamped).sum().backward()
    assert head.mlp[-1].bias.grad.abs().sum() > 0
    # Leading dimensions pass through, and bf16 states are accepted.
    assert head(states.reshape(8, 64, HIDDEN).bfloat16()).shape == (8, 64, 2 * dim)


@pytest.mark.parametrize("dim", [2, 3])
def test_box_loss_is_zero_for_a_perfect_prediction(dim):
    target = random_boxes(16, dim, torch.Generator().manual_seed(dim))
    parts = box_loss(target.clone(), target)
    assert parts.loss.item() < 1e-5
    assert parts.terms["l1"].item() == 0 and parts.terms["giou"].item() < 1e-5
    torch.testing.assert_close(paired_box_iou(target, target), torch.ones(16))
    # A small lesion (1% of each axis) too: MONAI's absolute eps must not eat its volume.
    tiny = torch.tensor([[0.50] * dim + [0.51] * dim])
    assert box_loss(tiny, tiny).loss.item() < 1e-5
    assert paired_box_iou(tiny, tiny).item() == pytest.approx(1.0, abs=1e-5)


def test_giou_loss_matches_a_hand_computed_value():
    # 2D: [0, .5]^2 against [.25, .75]^2. Intersection .0625, union .4375, IoU 1/7; enclosing box
    # [0, .75]^2 = .5625; GIoU = 1/7 - (.5625 - .4375) / .5625 = 1/7 - 2/9.
    pred, target = torch.tensor([[0, 0, 0.5, 0.5]]), torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    parts = box_loss(pred, target, l1_weight=0.0, giou_weight=1.0)
    assert parts.terms["giou"].item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert parts.loss.item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert parts.terms["l1"].item() == pytest.approx(0.25)
    assert paired_box_iou(pred, target).item() == pytest.approx(1 / 7, abs=1e-6)
    # 3D: [0, .5]^3 against [.25, .75]^3. Intersection 1/64, union 15/64, IoU 1/15; enclosure
    # 27/64; GIoU = 1/15 - (12/64) / (27/64) = 1/15 - 4/9.
    pred3, target3 = torch.tensor([[0.0] * 3 + [0.5] * 3]), torch.tensor([[0.25] * 3 + [0.75] * 3])
    parts3 = box_loss(pred3, target3, l1_weight=2.0, giou_weight=3.0)
    assert parts3.terms["giou"].item() == pytest.approx(1 - (1 / 15 - 4 / 9), abs=1e-6)
    assert parts3.loss.item() == pytest.approx(2 * 0.25 + 3 * (1 - (1 / 15 - 4 / 9)), abs=1e-5)
    # Disjoint boxes: IoU 0, GIoU negative, loss above 1.
    far = box_loss(torch.tensor([[0, 0, 0.1, 0.1]]), torch.tensor([[0.9, 0.9, 1, 1]]), 0, 1)
    assert 1 < far.loss.item() < 2


def test_box_loss_rejects_mismatched_boxes_and_handles_no_boxes():
    with pytest.raises(ValueError, match="boxes must be"):
        box_loss(torch.zeros(2, 4), torch.zeros(2, 6))
    pred = BoxHead(HIDDEN)(torch.zeros(0, HIDDEN))
    empty = box_loss(pred, torch.zeros(0, 4))
    assert empty.loss.item() == 0 and empty.loss.requires_grad


@pytest.mark.parametrize("dim", [2, 3])
def test_box_head_trains_to_fit_synthetic_boxes(dim):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    states = torch.randn(32, HIDDEN, generator=gen)
    # Boxes at least 0.1 wide, so IoU is a fair measure of fit.
    centre = torch.rand(32, dim, generator=gen) * 0.6 + 0.2
    half = torch.rand(32, dim, generator=gen) * 0.15 + 0.05
    targets = torch.cat([centre - half, centre + half], dim=-1)
    head = BoxHead(HIDDEN, dim=dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = box_loss(head(states), targets).loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = box_loss(head(states), targets).loss.item()
        iou = paired_box_iou(head(states), targets)
    assert final < first / 4
    assert iou.mean().item() > 0.8

"""Losses and metrics of the grounding heads, on MONAI's box and segmentation code.

Boxes use MONAI's ``StandardMode`` corners, which is medvl's order: ``xyxy`` in 2D and ``xyzxyz``
in 3D, corners on edges (MONAI's ``TO_REMOVE = 0``), so a medvl box goes in as it is.
``monai.losses.BoxGIoULoss`` and ``monai.data.box_utils`` handle 2D and 3D with one code path,
which torchvision's ``generalized_box_iou_loss`` (2D only) does not.

The mask loss is MONAI's ``DiceLoss`` with a sigmoid plus binary cross-entropy on the logits, the
two terms LISA trains its mask decoder with (``monai.losses.DiceCELoss`` computes the same sum, but
kept apart the terms can be logged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.losses.giou_loss import BoxGIoULoss
from monai.metrics import compute_dice

from medvl.scans.boxes import BOX_SCALE, check_boxes

# LISA's weights (bce 2.0, dice 0.5) and DETR's (L1 5, GIoU 2): both balance the terms' scales.
DEFAULT_BOX_L1_WEIGHT = 5.0
DEFAULT_BOX_GIOU_WEIGHT = 2.0
DEFAULT_MASK_DICE_WEIGHT = 0.5
DEFAULT_MASK_BCE_WEIGHT = 2.0


@dataclass
class LossParts:
    """A weighted total and its unweighted terms (for logging).

    Attributes:
        loss: The weighted sum, to back-propagate.
        terms: Each term before weighting, detached, e.g. ``{"l1": ..., "giou": ...}``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def box_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    l1_weight: float = DEFAULT_BOX_L1_WEIGHT,
    giou_weight: float = DEFAULT_BOX_GIOU_WEIGHT,
) -> LossParts:
    """L1 + generalized-IoU loss between predicted and target boxes, averaged over boxes.

    Args:
        pred: ``(N, 4)`` or ``(N, 6)`` normalised boxes, lower corner first (``BoxHead`` output).
        target: Ground-truth boxes of the same shape, medvl convention.
        l1_weight: Weight of the mean absolute corner error.
        giou_weight: Weight of ``1 - GIoU`` (MONAI ``BoxGIoULoss``, 2D or 3D).

    Returns:
        ``LossParts`` with terms ``l1`` and ``giou`` (the ``1 - GIoU`` loss). An empty batch
        (``N == 0``) gives a zero loss that still depends on ``pred``, so DDP sees every parameter.
    """
    check_boxes(pred, target)
    if pred.shape[0] == 0:
        zero = pred.sum() * 0.0
        return LossParts(zero, {"l1": zero.detach(), "giou": zero.detach()})
    target = target.to(pred.dtype)
    l1 = F.l1_loss(pred, target)
    giou = BoxGIoULoss(reduction="mean")(pred * BOX_SCALE, target * BOX_SCALE)
    loss = l1_weight * l1 + giou_weight * giou
    return LossParts(loss, {"l1": l1.detach(), "giou": giou.detach()})


def mask_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = DEFAULT_MASK_DICE_WEIGHT,
    bce_weight: float = DEFAULT_MASK_BCE_WEIGHT,
) -> LossParts:
    """Dice + binary cross-entropy between mask logits and binary targets.

    One Dice per mask: a volume ``(T, H, W)`` counts as one 3D mask, so its empty slices do not
    each add a Dice of their own.

    Args:
        logits: ``(N, H, W)`` or ``(N, T, H, W)`` mask logits (before the sigmoid).
        target: Binary masks of the same shape (bool or float).
        dice_weight: Weight of the Dice loss.
        bce_weight: Weight of the binary cross-entropy.

    Returns:
        ``LossParts`` with terms ``dice`` and ``bce``.
    """
    if logits.shape != target.shape or logits.ndim not in (3, 4):
        raise ValueError(
            "mask logits and targets must be (N, H, W) or (N, T, H, W) of one shape, got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    # MONAI wants a channel axis: (N, 1, *spatial).
    x, y = logits.unsqueeze(1), target.unsqueeze(1).to(logits.dtype)
    dice = DiceLoss(sigmoid=True)(x, y)
    bce = F.binary_cross_entropy_with_logits(x, y)
    loss = dice_weight * dice + bce_weight * bce
    return LossParts(loss, {"dice": dice.detach(), "bce": bce.detach()})


def dice_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice overlap of binary masks, one value per mask, a metric (MONAI ``compute_dice``).

    Args:
        pred: ``(N, ...)`` binary masks (threshold logits or probabilities first).
        target: Binary masks of the same shape.

    Returns:
        ``(N,)`` Dice in [0, 1]; 1 where both masks are empty.
    """
    p, t = pred.detach().unsqueeze(1).float(), target.detach().unsqueeze(1).float()
    return compute_dice(p, t, include_background=True, ignore_empty=False)[:, 0]

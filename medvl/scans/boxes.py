"""Normalised boxes, 2D ``[x1, y1, x2, y2]`` or 3D ``[x1, y1, z1, x2, y2, z2]``: paired IoU.

The one home of box overlap: the box head's GIoU loss (`medvl.model.heads.losses`) and the
evaluator's IoU (`medvl.eval.metrics.box_iou`) both build on it.
"""

from __future__ import annotations

import torch
from monai.data.box_utils import box_iou as monai_box_iou

__all__ = ["BOX_SCALE", "check_boxes", "paired_box_iou"]

# MONAI adds float32 eps (1.2e-7) to the union, so a perfect 3D box 1% of each axis (volume 1e-6)
# would score IoU 0.89. IoU and GIoU do not change when every box is scaled by 100, and the same
# box then has volume 1, which eps does not dent.
BOX_SCALE = 100.0


def check_boxes(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raises ValueError unless both are ``(N, 4)`` or both ``(N, 6)`` of one shape."""
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[-1] not in (4, 6):
        raise ValueError(
            "boxes must be (N, 4) or (N, 6) and of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


def paired_box_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted box with its own target (2D or 3D).

    Args:
        pred: ``(N, 4)`` or ``(N, 6)`` normalised boxes, min corner first.
        target: Boxes of the same shape.

    Returns:
        ``(N,)`` IoU values in [0, 1], detached.
    """
    check_boxes(pred, target)
    # MONAI's box_iou is all-pairs (N, M); its diagonal is the paired IoU. N is the number of
    # grounding tokens in a batch, so the N x N matrix is small.
    pred, target = pred.detach().float() * BOX_SCALE, target.detach().float() * BOX_SCALE
    return monai_box_iou(pred, target).diagonal()

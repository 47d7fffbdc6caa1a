"""Per-frame masks of a volume's video back into the volume, through the view's coordinate map.

A volume reaches the model as a :class:`medvl.scans.views.FrameView`: frame ``f`` shows the slice
``view.slice_indices[f]`` along ``view.axis``, flipped and resized as ``view.plane`` says. The
vision tower merges frames in pairs (temporal patch 2), so a mask predicted on feature-grid step
``t`` belongs to frames ``2t`` and ``2t + 1``, which show slices ``view.slice_indices[2t]`` and
``view.slice_indices[2t + 1]``::

    grid step t:    0         1         2   ...      (MaskHead output, (T', H, W))
    frames:       0   1     2   3     4   5 ...      pairs_to_frames: each pair gets its mask
    slices:      s0  s1    s2  s3    s4  s5 ...      masks_to_volume: view.slice_indices[f]
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medvl.scans.views import FrameView


def pairs_to_frames(
    masks: torch.Tensor, n_frames: int, temporal_patch_size: int = 2
) -> torch.Tensor:
    """Give each frame the mask of the grid step (frame pair) it was encoded in.

    Args:
        masks: ``(..., T', H, W)`` masks or logits, one per grid step.
        n_frames: Frames of the video. ``prepare_inputs`` pads an odd count by repeating the last
            frame; the padding frame is dropped here.
        temporal_patch_size: Frames per grid step (2 on every Qwen-VL family).

    Returns:
        ``(..., n_frames, H, W)``.
    """
    steps = masks.shape[-3]
    if steps != math.ceil(n_frames / temporal_patch_size):
        raise ValueError(
            f"{steps} grid steps cannot come from {n_frames} frames with temporal patch "
            f"{temporal_patch_size}"
        )
    return masks.repeat_interleave(temporal_patch_size, dim=-3)[..., :n_frames, :, :]


def masks_to_volume(
    frame_masks: torch.Tensor | np.ndarray, view: FrameView, nearest: bool = True
) -> torch.Tensor:
    """Place per-frame 2D masks at their voxels: the inverse of showing a volume as frames.

    Every voxel takes the mask value at its centre as displayed (``view.plane.pixel_of``), so each
    voxel gets a value whether the display is finer or coarser than the voxels. Masks may have any
    resolution that covers the whole frame — the displayed frame, the processor's resized image or
    the feature grid: positions are matched in normalised coordinates, which the processor's
    whole-picture resize preserves.

    Args:
        frame_masks: ``(F, h, w)`` masks, probabilities or logits, one per frame of ``view``.
        view: The ``FrameView`` the frames came from.
        nearest: Fill slices that no frame shows from the frame with the nearest slice (as
            ``view.locate(..., nearest=True)`` picks it); if False they stay 0.

    Returns:
        A float32 ``(X, Y, Z)`` tensor (the view's volume shape). A slice shown by several frames
        gets their mean.
    """
    if not torch.is_tensor(frame_masks):
        frame_masks = torch.from_numpy(np.asarray(frame_masks))
    masks = frame_masks.detach().float().cpu()
    if masks.ndim != 3 or masks.shape[0] != len(view.slice_indices):
        raise ValueError(
            f"expected ({len(view.slice_indices)}, h, w) masks for this view, got "
            f"{tuple(masks.shape)}"
        )
    plane = view.plane
    _, h, w = masks.shape
    # Display position of each in-plane voxel index (separable: x depends on the h_axis index
    # only, y on the v_axis index only), scaled from display pixels to the masks' pixels.
    cols = [
        _pixel(plane.pixel_of(_voxel(plane.h_axis, i))[0], plane.width, w)
        for i in range(plane.shape[plane.h_axis])
    ]
    rows = [
        _pixel(plane.pixel_of(_voxel(plane.v_axis, j))[1], plane.height, h)
        for j in range(plane.shape[plane.v_axis])
    ]
    in_plane = masks[:, rows][:, :, cols]  # (F, n_v, n_h)

    slices = []
    for k in range(plane.n_slices):
        frames = [f for f, s in enumerate(view.slice_indices) if s == k]
        if not frames and nearest:
            frames = [view.locate(_voxel(plane.axis, k), nearest=True)[0]]
        slices.append(in_plane[frames].mean(0) if frames else torch.zeros_like(in_plane[0]))
    stacked = torch.stack(slices)  # (n_slices, n_v, n_h): axes (axis, v_axis, h_axis)
    order = [plane.axis, plane.v_axis, plane.h_axis]
    return stacked.permute([order.index(a) for a in range(3)]).contiguous()


def _voxel(axis: int, index: int) -> tuple[int, int, int]:
    voxel = [0, 0, 0]
    voxel[axis] = index
    return voxel[0], voxel[1], voxel[2]


def _pixel(position: float, display: int, size: int) -> int:
    # The mask pixel that contains a display position, masks spanning the same frame at `size`.
    return min(size - 1, max(0, math.floor(position / display * size)))

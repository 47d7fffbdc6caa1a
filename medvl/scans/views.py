"""Views: turning a scan into the pictures a VLM sees.

medvl's coordinate convention (``../shared/DESIGN.md``) is stated here once::

      2D image (C, W, H)                  3D volume (C, X, Y, Z), RAS
      x = spatial axis 0 ->               x = axis 0 / X, y = axis 1 / Y, z = axis 2 / Z
    y  +-----------------+ (1, 0)
    =  |                 |                box = [x1, y1, z1, x2, y2, z2] in [0, 1]
    a  |     [x1, y1,    |
    x  |      x2, y2]    |
    i  |                 |
    s  +-----------------+ (1, 1)
    1 (0, 1)

Boxes are normalised to [0, 1] with corners on pixel *edges*, so the whole image is
``[0, 0, 1, 1]``: a pixel with index ``i`` on an axis of length ``n`` spans ``[i/n, (i+1)/n]``.
A 2D scan tensor is indexed ``(C, W, H)`` (MONAI's PILReader layout), so x and y follow spatial
axes 0 and 1 exactly as x, y and z follow axes 0, 1 and 2 of a volume.

A frame shown to a model is a PIL image: its column is the frame's first spatial axis and its row
the second, with no flips, so a voxel ``(i, j, k)`` seen on the frame of slice ``k`` sits at pixel
column ``i`` and row ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


def to_uint8(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Scale intensities to 0..255 between two percentiles of the whole array.

    Percentiles of the whole volume (not each slice) keep brightness comparable across frames.

    Args:
        array: any real-valued array.
        low_pct: percentile mapped to 0.
        high_pct: percentile mapped to 255.

    Returns:
        A ``uint8`` array of the same shape.
    """
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((array - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _plane_to_image(plane: np.ndarray) -> Image.Image:
    """A ``(C, W, H)`` uint8 plane -> an RGB PIL image of width W and height H."""
    if plane.shape[0] == 1:
        plane = np.repeat(plane, 3, axis=0)
    return Image.fromarray(np.ascontiguousarray(plane[:3].transpose(2, 1, 0)), mode="RGB")


def scan_to_image(scan: torch.Tensor | np.ndarray) -> Image.Image:
    """A 2D scan ``(C, W, H)`` as an RGB PIL image (grayscale is repeated to three channels).

    Args:
        scan: a channel-first 2D scan as returned by ``load_scan``.

    Returns:
        The image a VLM sees, ``W`` pixels wide and ``H`` high.
    """
    array = np.asarray(scan.detach().cpu() if isinstance(scan, torch.Tensor) else scan)
    if array.ndim != 3:
        raise ValueError(f"expected a 2D scan shaped (C, W, H), got shape {tuple(array.shape)}")
    return _plane_to_image(to_uint8(array))


@dataclass
class FrameView:
    """A volume as video frames.

    Attributes:
        frames: one RGB PIL image per frame.
        slice_indices: the index along ``axis`` of the slice each frame shows.
        axis: the spatial axis (0, 1 or 2) the frames step along.
    """

    frames: list[Image.Image]
    slice_indices: list[int]
    axis: int


def volume_to_frames(
    volume: torch.Tensor | np.ndarray, n_frames: int = 16, axis: int = 2
) -> FrameView:
    """Sample ``n_frames`` evenly spaced slices of a volume as video frames.

    Qwen-VL video encoders merge frames in pairs (temporal patch 2), so ``n_frames`` must be even.
    A volume with fewer slices than ``n_frames`` repeats slices rather than inventing them.

    Args:
        volume: a channel-first volume ``(C, X, Y, Z)``.
        n_frames: how many frames, even and >= 2.
        axis: the spatial axis to step along (2 = axial for a RAS volume).

    Returns:
        A ``FrameView`` whose frames show the planes spanned by the two other axes.
    """
    if n_frames < 2 or n_frames % 2:
        raise ValueError(f"n_frames must be an even number >= 2, got {n_frames}")
    array = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume)
    if array.ndim != 4:
        raise ValueError(f"expected a volume shaped (C, X, Y, Z), got shape {tuple(array.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    scaled = to_uint8(array)
    n_slices = array.shape[axis + 1]
    # Slice centres of n equal bins: evenly spread, never the empty edge slices only.
    indices = [int(i) for i in np.floor((np.arange(n_frames) + 0.5) * n_slices / n_frames)]
    frames = [_plane_to_image(np.take(scaled, i, axis=axis + 1)) for i in indices]
    return FrameView(frames=frames, slice_indices=indices, axis=axis)

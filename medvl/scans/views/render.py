"""Pixels: intensity scaling, input coercion and drawing one plane as a PIL image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

from medvl.scans.views.coords import Orientation, PlaneMap

Resample = Literal["nearest", "bilinear", "bicubic", "lanczos"]
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_uint8(
    array: np.ndarray,
    low_pct: float = 0.5,
    high_pct: float = 99.5,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Scale intensities to 0..255 between two percentiles of the whole array.

    Percentiles of the whole volume (not each slice) keep brightness comparable across frames.

    Args:
        array: any real-valued array.
        low_pct: percentile mapped to 0.
        high_pct: percentile mapped to 255.
        window: explicit ``(low, high)`` intensities (e.g. a CT window) instead of percentiles.

    Returns:
        A ``uint8`` array of the same shape.
    """
    array = np.asarray(array, dtype=np.float32)
    lo, hi = window if window is not None else np.percentile(array, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((array - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def as_array(scan: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor (MetaTensor included) or array as a numpy array on the CPU."""
    if isinstance(scan, torch.Tensor):
        return scan.detach().cpu().float().numpy()
    return np.asarray(scan)


def as_volume(
    volume: torch.Tensor | np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A channel-first volume ``(C, X, Y, Z)`` as an array, with its voxel spacing in mm.

    Spacing comes from ``spacing`` if given, else from a MetaTensor's ``meta["spacing"]`` (what
    ``load_scan`` writes) or its affine, else is taken as isotropic 1 mm.
    """
    array = as_array(volume)
    if array.ndim != 4:
        raise ValueError(f"expected a volume shaped (C, X, Y, Z), got shape {tuple(array.shape)}")
    if min(array.shape) < 1:
        raise ValueError(f"volume has an empty axis: shape {tuple(array.shape)}")
    if spacing is None:
        meta = getattr(volume, "meta", None) or {}
        if "spacing" in meta:
            spacing = meta["spacing"]
        elif hasattr(volume, "pixdim"):
            spacing = volume.pixdim
        else:
            spacing = (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive millimetre values, got {spacing!r}")
    return array, (values[0], values[1], values[2])


def to_pil(plane: np.ndarray) -> Image.Image:
    """A ``(C, W, H)`` uint8 plane -> a PIL image ``W`` wide and ``H`` high (L or RGB)."""
    if plane.shape[0] >= 3:
        return Image.fromarray(np.ascontiguousarray(plane[:3].transpose(2, 1, 0)))
    # One channel (or two, which no display has): show the first as grayscale.
    return Image.fromarray(np.ascontiguousarray(plane[0].T))


def render_plane(plane: np.ndarray, pmap: PlaneMap, resample: Resample = "bilinear") -> Image.Image:
    """Draw one uint8 plane ``(C, n_h, n_v)`` in array order as ``pmap`` displays it (RGB).

    Flipping before resizing is equivalent to after: PIL resizes with pixel centres at half
    integers, symmetric under a mirror, which is what makes ``PlaneMap``'s formulas exact.
    """
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    if pmap.flip_h:
        plane = plane[:, ::-1, :]
    if pmap.flip_v:
        plane = plane[:, :, ::-1]
    image = to_pil(plane)
    if image.size != (pmap.width, pmap.height):
        image = image.resize((pmap.width, pmap.height), _RESAMPLE[resample])
    return image.convert("RGB")


def scan_to_image(scan: torch.Tensor | np.ndarray) -> Image.Image:
    """A 2D scan ``(C, W, H)`` as an RGB PIL image (grayscale is repeated to three channels).

    The image is the array as stored, no flips or resizing: for a 2D scan the medvl box of a
    region is already its box on this image.

    Args:
        scan: a channel-first 2D scan as returned by ``load_scan``.

    Returns:
        The image a VLM sees, ``W`` pixels wide and ``H`` high.
    """
    array = as_array(scan)
    if array.ndim != 3:
        raise ValueError(f"expected a 2D scan shaped (C, W, H), got shape {tuple(array.shape)}")
    return to_pil(to_uint8(array)).convert("RGB")


def prepare(
    volume: torch.Tensor | np.ndarray,
    axis: int,
    spacing: Sequence[float] | None,
    size: int | None,
    orientation: Orientation,
    window: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray, PlaneMap]:
    """What every volume view starts from: raw array, its uint8 scaling, and the plane map."""
    array, spacing_mm = as_volume(volume, spacing)
    pmap = PlaneMap.build(array.shape[1:], axis, spacing_mm, size, orientation)
    return array, to_uint8(array, window=window), pmap


def even_indices(n_slices: int, count: int) -> list[int]:
    """Centres of ``count`` equal bins over ``n_slices``: evenly spread, never only the edges.

    With ``count >= n_slices`` every slice appears (some twice): the bins are at most a slice wide.
    """
    return [int(i) for i in np.floor((np.arange(count) + 0.5) * n_slices / count)]


def draw_box(
    image: Image.Image,
    box: Sequence[float] | None,
    colour: tuple[int, int, int] = (255, 0, 0),
    width: int = 2,
) -> Image.Image:
    """A copy of ``image`` with a normalised 2D box ``[x1, y1, x2, y2]`` outlined (red by
    default); None draws nothing. Corners are pixel edges, as in medvl's box convention."""
    from PIL import ImageDraw

    out = image.convert("RGB")
    if box is None:
        return out
    w, h = out.size
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = round(min(x1, x2) * w), round(min(y1, y2) * h)
    right, bottom = round(max(x1, x2) * w) - 1, round(max(y1, y2) * h) - 1
    ImageDraw.Draw(out).rectangle(
        [left, top, max(left, right), max(top, bottom)], outline=colour, width=width
    )
    return out

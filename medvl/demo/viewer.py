"""What the demo draws: one plane of a scan, windowed, enlarged, labelled, with overlays.

No Gradio here. A 3D scan is shown in one of three planes (``PLANES``) through the view
coordinate maps of :mod:`medvl.scans.views`, so a box or mask lands on the voxels it names; a 2D
scan is shown as stored (medvl's 2D boxes are already boxes on that picture). Grey values come
from a window (:func:`window_range`); colour pictures keep their values unless asked otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medvl.scans.views import draw_box, volume_to_slice
from medvl.scans.views.coords import PlaneMap, display_size
from medvl.scans.views.render import as_array, to_uint8

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}  # plane -> the RAS axis it cuts across
DISPLAY_SIDE = 560  # the longer side of the picture on screen, in pixels

# Window presets as (centre, width); CT ones in Hounsfield units.
CT_WINDOWS = {
    "CT soft tissue": (40.0, 400.0),
    "CT lung": (-600.0, 1500.0),
    "CT bone": (400.0, 1800.0),
    "CT brain": (40.0, 80.0),
}
PERCENTILES = {"0.5-99.5 %": (0.5, 99.5), "1-99 %": (1.0, 99.0), "5-95 %": (5.0, 95.0)}
FILE_WINDOW, FULL_RANGE, MANUAL = "as in the file", "full range", "manual"
_SCALE_STEPS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def window_presets(modality: str | None, file_window: Any, channels: int) -> list[str]:
    """The window choices for a scan, its default first.

    CT scans get the CT presets (the file's own window first when it has one); colour pictures
    (3 channels) start at their full range; everything else (MRI, X-ray pictures, fundus) at
    percentiles, since its values have no physical unit.
    """
    choices: list[str] = []
    if file_window is not None:
        choices.append(FILE_WINDOW)
    if channels >= 3:
        choices.append(FULL_RANGE)
    if (modality or "").upper() == "CT":
        choices += list(CT_WINDOWS)
    choices += [*PERCENTILES, FULL_RANGE, MANUAL]
    return list(dict.fromkeys(choices))


def window_range(
    array: np.ndarray,
    preset: str,
    centre: float | None = None,
    width: float | None = None,
    file_window: Sequence[float] | None = None,
) -> tuple[float, float]:
    """The ``(low, high)`` values a preset maps to black and white.

    Args:
        array: The scan's values (all of them, so slices of one scan compare).
        preset: One of :func:`window_presets`' names.
        centre, width: The manual window (used when ``preset`` is ``"manual"``).
        file_window: The file's ``(centre, width)`` (DICOM VOI), for ``"as in the file"``.

    Raises:
        ValueError: An unknown preset, a manual window without a positive width, or the file's
            window asked for where the file has none.
    """
    if preset in CT_WINDOWS:
        centre, width = CT_WINDOWS[preset]
    elif preset == FILE_WINDOW:
        if file_window is None:
            raise ValueError("this scan's file has no window of its own")
        centre, width = (float(v) for v in file_window)
    elif preset in PERCENTILES:
        low, high = np.percentile(array, PERCENTILES[preset])
        return float(low), float(high)
    elif preset == FULL_RANGE:
        return float(np.min(array)), float(np.max(array))
    elif preset != MANUAL:
        raise ValueError(f"unknown window {preset!r}; choose one of {window_presets(None, 1, 3)}")
    if centre is None or width is None or not width > 0:
        raise ValueError(f"a window needs a centre and a positive width, got {centre}, {width}")
    return float(centre) - float(width) / 2, float(centre) + float(width) / 2


@dataclass
class Overlay:
    """Something drawn on the scan: a normalised box (4 numbers for 2D, 6 for 3D) and/or a
    mask shaped like the scan's spatial axes, in one colour."""

    colour: tuple[int, int, int]
    box: Sequence[float] | None = None
    mask: Any = None


@dataclass
class Picture:
    """A drawn plane and what the screen says about it.

    Attributes:
        image: The picture.
        index: The slice shown (0 for 2D).
        n_slices: Slices along the plane's axis (1 for 2D).
        mm_per_pixel: Millimetres per screen pixel, across.
        box_slices: For each overlay with a 3D box, the first and last slice it spans.
    """

    image: Image.Image
    index: int
    n_slices: int
    mm_per_pixel: float
    box_slices: list[tuple[int, int] | None] = field(default_factory=list)


def draw_plane(
    scan: Any,
    plane: str = "axial",
    index: int | None = None,
    window: tuple[float, float] | None = None,
    smooth: bool = False,
    side: int = DISPLAY_SIDE,
    overlays: Sequence[Overlay] = (),
) -> Picture:
    """One plane of ``scan`` (``(C, W, H)`` or ``(C, X, Y, Z)``, as ``load_scan`` returns) as
    the demo shows it: enlarged so its longer side is ``side`` pixels at the scan's physical
    aspect ratio, with overlays, orientation letters (scans whose axes are the patient's) and
    a millimetre scale bar.

    Args:
        scan: The scan; its ``meta`` gives spacing and orientation.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"`` (ignored for 2D).
        index: The slice along the plane's axis; default the middle one.
        window: ``(low, high)`` values mapped to black and white; default 0.5-99.5 percentiles.
        smooth: Bilinear enlargement instead of nearest neighbour (voxels stay visible).
        side: The picture's longer side in pixels.
        overlays: Boxes and masks to draw, in order.
    """
    meta = getattr(scan, "meta", None) or {}
    array = as_array(scan)
    scaled = to_uint8(array, window=window)
    resample = "bilinear" if smooth else "nearest"
    if array.ndim == 3:
        return _draw_2d(scaled, meta, side, resample, overlays)
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {list(PLANES)}, got {plane!r}")
    oriented = meta.get("orientation") == "RAS"
    spacing = [float(s) for s in meta.get("spacing", (1.0, 1.0, 1.0))]
    axis = PLANES[plane]
    view = volume_to_slice(
        scaled, index, axis, spacing=spacing, size=side, resample=resample,
        orientation="radiological" if oriented else "array", window=(0, 255),
    )  # fmt: skip
    pmap = view.plane
    image, spans = view.image.convert("RGB"), []
    for overlay in overlays:
        if overlay.mask is not None:
            plane_mask = np.take(as_array(overlay.mask) > 0, view.slice_index, axis=axis)
            image = _tint(image, _oriented(plane_mask, pmap), overlay.colour)
        box = overlay.box if overlay.box is not None and len(overlay.box) == 6 else None
        spans.append(pmap.slices(box) if box is not None else None)
        if box is not None and spans[-1][0] <= view.slice_index <= spans[-1][1]:
            image = draw_box(image, pmap.project(box), overlay.colour)
    mm = pmap.shape[pmap.h_axis] * spacing[pmap.h_axis] / pmap.width
    if oriented:
        _letters(image, pmap.edges)
    _scale_bar(image, mm)
    return Picture(image, view.slice_index, pmap.n_slices, mm, spans)


def _draw_2d(
    scaled: np.ndarray, meta: dict, side: int, resample: str, overlays: Sequence[Overlay]
) -> Picture:
    spacing = [float(s) for s in meta.get("spacing", (1.0, 1.0))]
    channels, w, h = scaled.shape
    size = display_size(w, h, spacing[0], spacing[1], side)
    picture = scaled[:3] if channels >= 3 else np.repeat(scaled[:1], 3, axis=0)
    image = Image.fromarray(np.ascontiguousarray(picture.transpose(2, 1, 0)))
    method = Image.Resampling.BILINEAR if resample == "bilinear" else Image.Resampling.NEAREST
    image = image.resize(size, method)
    for overlay in overlays:
        if overlay.mask is not None:
            mask = as_array(overlay.mask) > 0
            image = _tint(image, mask.reshape(mask.shape[-2:]), overlay.colour)
        if overlay.box is not None and len(overlay.box) == 4:
            image = draw_box(image, overlay.box, overlay.colour)
    mm = w * spacing[0] / size[0]
    _scale_bar(image, mm)
    return Picture(image, 0, 1, mm, [None] * len(overlays))


def _oriented(plane_mask: np.ndarray, pmap: PlaneMap) -> np.ndarray:
    """A plane's ``(n_h, n_v)`` mask flipped as ``pmap`` displays it (``_tint`` resizes it)."""
    if pmap.flip_h:
        plane_mask = plane_mask[::-1, :]
    if pmap.flip_v:
        plane_mask = plane_mask[:, ::-1]
    return plane_mask


def _tint(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """``image`` with ``mask`` (``(W, H)``, any resolution) shaded in ``colour`` at 40 %."""
    if not mask.any():
        return image
    alpha = Image.fromarray(np.ascontiguousarray(mask.T).astype(np.uint8) * 102)
    alpha = alpha.resize(image.size, Image.Resampling.NEAREST)
    return Image.composite(Image.new("RGB", image.size, colour), image, alpha)


def _letters(image: Image.Image, edges: dict[str, str]) -> None:
    """Patient directions at the middle of each edge (R, L, A, P, S, I)."""
    draw, (w, h) = ImageDraw.Draw(image), image.size
    spots = {"left": (4, h // 2 - 6), "right": (w - 12, h // 2 - 6),
             "top": (w // 2 - 4, 3), "bottom": (w // 2 - 4, h - 15)}  # fmt: skip
    for edge, (x, y) in spots.items():
        draw.text((x, y), edges[edge], fill=(255, 255, 0), stroke_width=1, stroke_fill=(0, 0, 0))


def _scale_bar(image: Image.Image, mm_per_pixel: float) -> None:
    """A bar of a round number of millimetres, about a fifth of the width, at the bottom left."""
    w, h = image.size
    fits = [mm for mm in _SCALE_STEPS_MM if mm / mm_per_pixel <= w / 4]
    if not fits or mm_per_pixel <= 0:
        return
    mm = fits[-1]
    length, draw, y = round(mm / mm_per_pixel), ImageDraw.Draw(image), h - 10
    draw.line([(10, y), (10 + length, y)], fill=(0, 0, 0), width=5)
    draw.line([(10, y), (10 + length, y)], fill=(255, 255, 255), width=3)
    draw.text((10, y - 16), f"{mm} mm", fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))

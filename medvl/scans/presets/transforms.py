"""The array transforms the presets are built from, where MONAI has no ready one.

Each is a small, picklable MONAI :class:`~monai.transforms.Transform` (DataLoader workers
pickle the pipeline) that takes and returns a channel-first MetaTensor, keeping its meta and
affine. Intensity windows are :class:`Window` ``(center, width)`` pairs throughout, the order
of DICOM's WindowCenter/WindowWidth and of ``load_scan``'s ``meta["window"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import (
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
    Spacing,
    Transform,
)

__all__ = [
    "CT_WINDOWS",
    "AnisotropicSpacing",
    "FieldOfViewMask",
    "ForegroundAbove",
    "MaskOutsideCircle",
    "OnVolumes",
    "ScaleWindows",
    "ScaleWithDicomWindow",
    "SyncMeta",
    "Window",
    "WindowSpec",
    "parse_windows",
]


class Window(NamedTuple):
    """An intensity window: ``center`` (the level) and ``width``, in the image's units.

    The values from ``low = center - width / 2`` to ``high = center + width / 2`` are mapped to
    [0, 1] and those outside are clipped: the DICOM "LINEAR_EXACT" VOI function (PS3.3
    C.11.2.1.3). DICOM's default "LINEAR" function differs from it by half a stored unit at each
    end, invisible at the widths used in practice.
    """

    center: float
    width: float

    @property
    def low(self) -> float:
        """The value mapped to 0 (black)."""
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        """The value mapped to 1 (white)."""
        return self.center + self.width / 2

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)``: the form the views' ``window`` argument takes."""
        return self.low, self.high


#: Named CT windows, in Hounsfield units, as ``Window(center=level, width)``: the standard
#: radiology display settings (e.g. Radiopaedia, "Windowing (CT)"): soft tissue W400/L50, lung
#: W1500/L-600, bone W1800/L400, brain W80/L40, mediastinum W350/L50.
CT_WINDOWS: dict[str, Window] = {
    "soft_tissue": Window(50.0, 400.0),
    "lung": Window(-600.0, 1500.0),
    "bone": Window(400.0, 1800.0),
    "brain": Window(40.0, 80.0),
    "mediastinum": Window(50.0, 350.0),
}

#: One window: a name of :data:`CT_WINDOWS`, a :class:`Window`, a ``(center, width)`` pair or a
#: mapping with ``center`` (or ``level``) and ``width`` keys (the unambiguous form for YAML).
WindowSpec = str | Window | Sequence[float] | Mapping[str, float]


def parse_windows(spec: WindowSpec | Sequence[WindowSpec]) -> list[Window]:
    """One window or several as a list of :class:`Window`.

    A pair of numbers is one ``(center, width)`` window; any other sequence is several windows.

    Raises:
        ValueError: an unknown name, a malformed window, or a width that is not positive.
    """
    if _is_single(spec):
        return [_parse_one(spec)]
    if not isinstance(spec, Sequence) or len(spec) == 0:
        raise ValueError(f"window must be one window or a non-empty list of them, got {spec!r}")
    return [_parse_one(item) for item in spec]


def _is_single(spec) -> bool:
    if isinstance(spec, (str, Window, Mapping)):
        return True
    return (
        isinstance(spec, Sequence)
        and len(spec) == 2
        and all(isinstance(v, Real) and not isinstance(v, bool) for v in spec)
    )


def _parse_one(spec) -> Window:
    if isinstance(spec, str):
        if spec not in CT_WINDOWS:
            raise ValueError(f"unknown window {spec!r}; named windows: {', '.join(CT_WINDOWS)}")
        return CT_WINDOWS[spec]
    if isinstance(spec, Mapping):
        keys = set(spec)
        if keys not in ({"center", "width"}, {"level", "width"}):
            raise ValueError(f"a window mapping needs center (or level) and width, got {spec!r}")
        spec = (spec.get("center", spec.get("level")), spec["width"])
    if not _is_single(spec):
        raise ValueError(
            f"a window is a name ({', '.join(CT_WINDOWS)}), a (center, width) pair or a "
            f"{{center, width}} mapping, got {spec!r}"
        )
    center, width = (float(v) for v in spec)
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise ValueError(f"a window needs a finite center and a positive width, got {spec!r}")
    return Window(center, width)


def _scale(window: Window) -> ScaleIntensityRange:
    return ScaleIntensityRange(window.low, window.high, b_min=0.0, b_max=1.0, clip=True)


class ScaleWindows(Transform):
    """Map intensities to [0, 1] through several windows, one output channel per window.

    A one-channel CT through ``("soft_tissue", "lung", "bone")`` becomes three channels that a
    model pretrained on RGB can take as a colour image. With ``C`` input channels and ``K``
    windows the output has ``C * K`` channels, window-major.

    Args:
        windows: the windows, in channel order (see :func:`parse_windows`).
    """

    def __init__(self, windows: WindowSpec | Sequence[WindowSpec]) -> None:
        self.windows = parse_windows(windows)
        self._scalers = [_scale(w) for w in self.windows]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        # torch.cat on MetaTensors keeps the first one's meta and affine.
        return torch.cat([scale(img) for scale in self._scalers], dim=0)


class ScaleWithDicomWindow(Transform):
    """Map to [0, 1] with the scan's DICOM VOI window, else with intensity percentiles.

    The window is ``meta["window"]``, the ``(center, width)`` that ``load_scan`` reads from the
    file's first WindowCenter/WindowWidth, already in the units of the returned values (so a
    MONOCHROME1 file, whose pixels the loader mirrors, needs nothing more here). It is the
    display the modality or the reading radiologist chose; without it (PNG, JPEG, DICOM with no
    VOI window) the ``lower``/``upper`` percentiles of the image are mapped to 0 and 1.

    Args:
        lower: percentile mapped to 0 when there is no window.
        upper: percentile mapped to 1 when there is no window.
        use_window: False ignores the file's window and always uses the percentiles.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, use_window: bool = True) -> None:
        _check_percentiles(lower, upper)
        self.use_window = use_window
        self._percentiles = ScaleIntensityRangePercentiles(
            lower, upper, b_min=0.0, b_max=1.0, clip=True
        )

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = img.meta if isinstance(img, MetaTensor) else {}
        window = meta.get("window") if self.use_window else None
        if window is None:
            return self._percentiles(img)
        return _scale(_parse_one(tuple(window)))(img)


class SyncMeta(Transform):
    """Bring ``load_scan``'s meta up to date after a preset: spacing from the affine, no window.

    MONAI's spatial transforms (``Spacing``, ``Resize``, crops and pads) update the affine but
    not ``meta["spacing"]``, which the views read for the pixel aspect: it is recomputed from
    the affine. ``meta["window"]`` (the DICOM VOI window, in the loaded units) no longer
    describes intensities a preset has mapped to [0, 1], so it becomes None; applying a preset
    twice then does not window the [0, 1] values again. Every preset ends with this. Plain
    tensors pass through unchanged.
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, MetaTensor):
            return img
        spacing = tuple(float(s) for s in affine_to_spacing(img.affine, r=img.ndim - 1))
        # A new dict rather than an in-place edit: never touch a dict another tensor may share.
        meta = {**img.meta, "spacing": spacing}
        if "window" in meta:
            meta["window"] = None
        img.meta = meta
        return img


class AnisotropicSpacing(Transform):
    """MONAI ``Spacing`` to ``pixdim``, except along axes much coarser than the finest one.

    A 2D multi-slice acquisition (knee PD/T2 TSE: ~0.4 mm in plane, 3-4 mm slices) carries no
    information between its slices; interpolating them to the in-plane spacing multiplies the
    voxels without adding detail. As in nnU-Net (Isensee et al., 2021), an axis is anisotropic
    when its spacing exceeds ``anisotropy_threshold`` (3) times the finest; such an axis keeps
    its native spacing (MONAI's ``Spacing`` keeps an axis whose target is not positive). The
    test works in RAS axes, so it finds the slice axis of sagittal, coronal and axial stacks.

    Args:
        pixdim: target spacing in mm, one value for every axis or one per axis.
        anisotropy_threshold: ratio to the finest spacing above which an axis keeps its spacing;
            None resamples every axis to ``pixdim``.
        mode: interpolation, as for MONAI ``Spacing``.
        **spacing_kwargs: passed on to MONAI ``Spacing``.
    """

    def __init__(
        self,
        pixdim: float | Sequence[float],
        anisotropy_threshold: float | None = 3.0,
        mode: str = "bilinear",
        **spacing_kwargs,
    ) -> None:
        values = np.atleast_1d(np.asarray(pixdim, dtype=np.float64))
        if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"target spacing must be positive millimetres, got {pixdim!r}")
        if anisotropy_threshold is not None and not anisotropy_threshold > 1:
            raise ValueError(
                f"anisotropy_threshold must be > 1 or None, got {anisotropy_threshold}"
            )
        self.pixdim = values
        self.anisotropy_threshold = anisotropy_threshold
        self.mode = mode
        self.spacing_kwargs = spacing_kwargs

    def target(self, native: Sequence[float]) -> np.ndarray:
        """The spacing an image of ``native`` spacing is resampled to."""
        native = np.asarray(native, dtype=np.float64)
        target = np.resize(self.pixdim, native.shape)  # one value -> every axis
        if self.pixdim.size not in (1, native.size):
            raise ValueError(f"target spacing {tuple(self.pixdim)} for a {native.size}D image")
        if self.anisotropy_threshold is not None:
            thick = native > self.anisotropy_threshold * native.min()
            target = np.where(thick, native, target)
        return target

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        affine = img.affine if isinstance(img, MetaTensor) else torch.eye(4, dtype=torch.float64)
        native = affine_to_spacing(affine, r=img.ndim - 1)
        pixdim = self.target(np.asarray(native, dtype=np.float64))
        return Spacing(pixdim=pixdim.tolist(), mode=self.mode, **self.spacing_kwargs)(img)


class OnVolumes(Transform):
    """Apply ``transform`` to 3D images ``(C, X, Y, Z)`` only; 2D ones pass unchanged.

    The MRI presets reorient and resample volumes; a 2D slice (the JPEG of a VQA dataset) has
    no orientation to fix and rarely a known spacing (PNG: 1 "mm" per pixel by convention), so
    resampling it would only rescale it arbitrarily.

    Args:
        transform: the array transform for volumes.
    """

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.transform(img) if img.ndim == 4 else img


class ForegroundAbove:
    """``select_fn`` for MONAI ``CropForeground``: values above ``threshold``.

    Unlike a lambda it pickles (DataLoader workers). An image with nothing above the threshold
    selects everything, so the crop keeps the whole image rather than returning an empty one.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        mask = img > self.threshold
        return mask if bool(mask.any()) else torch.ones_like(mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"


class FieldOfViewMask:
    """``select_fn`` for MONAI ``CropForeground``: the bounding box of a fundus field of view.

    A fundus photograph is a bright disc (the camera's circular field of view) on black. Pixels
    above ``threshold`` (on the channel CropForeground passes, the red one in the presets: the
    brightest in a fundus, so the disc edge is sharpest there) are counted per column and per
    row. Along each axis the box is the unbroken run, around the fullest column (row), of
    columns (rows) that hold more than ``min_fraction`` of that fullest one's count. This is
    the thresholded-bounding-box crop of common diabetic-retinopathy preprocessing (e.g. the
    "crop_image_from_gray" of the APTOS 2019 Kaggle kernels, tolerance 7/255), made robust:
    JPEG noise and hot pixels stay under the count, and a text label or logo in the black
    border, separated from the disc by a gap, is a run of its own and left out. The price is
    tiny: a chord of 5 % of the diameter lies within r / 800 of the disc's edge (under a pixel
    for any disc narrower than 1600 pixels).

    Returns a mask whose bounding box is that box; with nothing above the threshold, the whole
    image.

    Args:
        threshold: intensity separating the disc from the background (image scaled to [0, 1]).
        min_fraction: fraction of the fullest column's (row's) count a column (row) needs.
    """

    def __init__(self, threshold: float = 0.04, min_fraction: float = 0.05) -> None:
        if not 0 <= min_fraction < 1:
            raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
        self.threshold = float(threshold)
        self.min_fraction = float(min_fraction)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3:
            raise ValueError(f"expected a 2D image (C, W, H), got shape {tuple(img.shape)}")
        inside = (img > self.threshold).any(0)  # (W, H)
        if not bool(inside.any()):
            return torch.ones_like(img, dtype=torch.bool)
        keep_x = self._run_around_peak(inside.sum(1))  # pixels in each column
        keep_y = self._run_around_peak(inside.sum(0))  # ... and in each row
        return (keep_x[:, None] & keep_y[None, :])[None]

    def _run_around_peak(self, counts: torch.Tensor) -> torch.Tensor:
        """The unbroken run of counts above ``min_fraction`` of the peak, around the peak."""
        peak = int(counts.argmax())
        gaps = torch.nonzero(counts <= self.min_fraction * counts[peak]).flatten()
        before, after = gaps[gaps < peak], gaps[gaps > peak]
        start = int(before.max()) + 1 if len(before) else 0
        stop = int(after.min()) if len(after) else len(counts)
        run = torch.zeros_like(counts, dtype=torch.bool)
        run[start:stop] = True
        return run

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(threshold={self.threshold}, min_fraction={self.min_fraction})"
        )


class MaskOutsideCircle(Transform):
    """Set to 0 what lies outside the circle inscribed in a 2D image's longer side.

    After the field-of-view crop the disc's diameter is the box's longer side (fundus cameras
    clip the disc at the top and bottom, not at the sides) and its centre the box's centre.
    Zeroing outside it removes the glare, text and noise of the black corners, as Graham's
    Kaggle DR method does with its circular mask (Graham, Kaggle Diabetic Retinopathy
    Detection competition report, 2015).

    Args:
        radius_scale: the circle's radius as a fraction of half the longer side (Graham: 0.9,
            to hide the rim his local-average subtraction brightens).
    """

    def __init__(self, radius_scale: float = 1.0) -> None:
        if not radius_scale > 0:
            raise ValueError(f"radius_scale must be positive, got {radius_scale}")
        self.radius_scale = float(radius_scale)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3:
            raise ValueError(f"expected a 2D image (C, W, H), got shape {tuple(img.shape)}")
        w, h = img.shape[1:]
        radius = self.radius_scale * max(w, h) / 2
        # pixel centres, measured from the image centre
        x = torch.arange(w, dtype=torch.float32, device=img.device) - (w - 1) / 2
        y = torch.arange(h, dtype=torch.float32, device=img.device) - (h - 1) / 2
        inside = (x[:, None] ** 2 + y[None, :] ** 2) <= radius**2
        return img * inside.to(img.dtype)


def _check_percentiles(lower: float, upper: float) -> None:
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower, upper}")

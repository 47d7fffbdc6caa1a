"""DICOM geometry: frames to a channel-first volume and its RAS affine, frame positions of
multi-frame files, pixel spacing and slice gap.

Split out of :mod:`medvl.scans.dicom`. Slices are ordered by their position along the slice normal
(the cross product of the ImageOrientationPatient row and column cosines), not by
InstanceNumber, and the slice step is the whole position difference, not z alone, so sagittal and
oblique stacks come out right; MONAI's PydicomReader does neither.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.data.utils import orientation_ras_lps
from pydicom.dataset import Dataset

from medvl.scans.dicom_values import _frame_groups, _item, _lookup, _n_frames
from medvl.scans.errors import ScanError

# The warnings keep the name of the module users load DICOM through.
logger = logging.getLogger("medvl.scans.dicom")


def _stack(
    frames: np.ndarray,
    positions: np.ndarray | None,
    iop,
    spacing: tuple[float, float],
    gap: float,
    where: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(F, rows, columns, S)`` -> ``(S, X, Y, Z)`` and the RAS voxel->world affine."""
    if positions is None or iop is None:
        msg = (
            "%s: no ImagePositionPatient/ImageOrientationPatient; axes kept as stored: "
            "x columns, y rows, z frames (or slices in InstanceNumber order)"
        )
        logger.warning(msg, where)
        affine = np.diag([spacing[1], spacing[0], gap or 1.0, 1.0])
        return np.ascontiguousarray(frames.transpose(3, 2, 1, 0)), affine
    row_dir, col_dir = direction_cosines(iop, where)
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(positions @ normal, kind="stable")
    frames, positions = frames[order], positions[order]
    depth = positions @ normal
    gaps = np.diff(depth)
    if np.any(gaps < 1e-3):
        raise ScanError(
            f"{where}: {int(np.sum(gaps < 1e-3)) + 1} slices share a position (several "
            "echoes, phases or time points in one series?); medvl loads one 3D volume"
        )
    if gaps.max() - gaps.min() > 0.01 * gaps.mean():
        msg = "%s: uneven slice spacing (%.4g to %.4g mm); the affine uses the mean"
        logger.warning(msg, where, gaps.min(), gaps.max())
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # along a row = next column
    lps[:3, 1] = col_dir * spacing[0]  # along a column = next row
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    return np.ascontiguousarray(frames.transpose(3, 2, 1, 0)), orientation_ras_lps(lps)


def header_numbers(value, count: int, keyword: str, where: Path) -> np.ndarray:
    """A multi-valued header field as ``count`` finite floats, or a ScanError naming it."""
    try:
        numbers = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.full(0, np.nan)
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        iterable = hasattr(value, "__iter__") and not isinstance(value, str)
        shown = str([str(v) for v in value]) if iterable else repr(value)
        comma = " (a decimal comma? DICOM numbers use a point)" if "," in shown else ""
        raise ScanError(f"{where}: {keyword} is {shown}, expected {count} finite numbers{comma}")
    return numbers


def direction_cosines(iop, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """ImageOrientationPatient's row and column directions, checked: unit length and at right
    angles within 1 % (scanners round to a few decimals), then normalised."""
    values = header_numbers(iop, 6, "ImageOrientationPatient", where)
    row, col = values[:3], values[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(col)
    if min(lengths) < 1e-6:
        raise ScanError(
            f"{where}: ImageOrientationPatient {values.tolist()} has a zero direction: the "
            "file gives no usable orientation"
        )
    cosine = float(row @ col) / (lengths[0] * lengths[1])
    if max(abs(lengths[0] - 1), abs(lengths[1] - 1)) > 0.01 or abs(cosine) > 0.01:
        raise ScanError(
            f"{where}: ImageOrientationPatient {values.tolist()} is not two unit vectors at "
            f"right angles (lengths {lengths[0]:.4g} and {lengths[1]:.4g}, cosine {cosine:.4g})"
        )
    return row / lengths[0], col / lengths[1]


def _multiframe_positions(ds: Dataset, n: int, iop) -> np.ndarray | None:
    groups = _frame_groups(ds, n)
    per_frame = [_item(g, "PlanePositionSequence", "ImagePositionPatient") for g in groups]
    if all(p is not None for p in per_frame):  # enhanced multi-frame
        return np.asarray(per_frame, float)
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or iop is None:
        return None
    offsets = ds.get("GridFrameOffsetVector")  # RTDOSE
    if offsets is not None and len(offsets) == n:
        # Relative to ImagePositionPatient, or absolute z when the first is not 0.
        steps = np.asarray(offsets, float) - float(offsets[0])
    elif _slice_gap(ds):
        steps = np.arange(n) * _slice_gap(ds)
    else:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return np.asarray(ipp, float) + steps[:, None] * normal


def _affine_2d(ds: Dataset) -> np.ndarray:
    row, col = _pixel_spacing(ds)
    return np.diag([col, row, 1.0, 1.0])


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    """(row spacing, column spacing) in mm, 1.0 when the file does not say."""
    groups = _frame_groups(ds, _n_frames(ds))
    value = (
        _lookup(ds, groups[0], "PixelMeasuresSequence", "PixelSpacing")
        or ds.get("ImagerPixelSpacing")
        or ds.get("NominalScannedPixelSpacing")
    )
    if value is None:
        return 1.0, 1.0
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        row = col = float("nan")
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        logger.warning(
            "%s: PixelSpacing %r is not two positive finite numbers; using 1.0 x 1.0 mm, so "
            "distances and volumes in mm are not physical",
            getattr(ds, "filename", "DICOM file"), str(value),
        )  # fmt: skip
        return 1.0, 1.0
    return row, col


def _slice_gap(ds: Dataset) -> float:
    gap = _lookup(ds, None, "PixelMeasuresSequence", "SpacingBetweenSlices")
    value = gap or _lookup(ds, None, "PixelMeasuresSequence", "SliceThickness")
    try:
        return abs(float(value))
    except (TypeError, ValueError):
        return 0.0

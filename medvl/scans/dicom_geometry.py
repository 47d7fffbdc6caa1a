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
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
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
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return 1.0, 1.0
    return (row, col) if row > 0 and col > 0 else (1.0, 1.0)


def _slice_gap(ds: Dataset) -> float:
    gap = _lookup(ds, None, "PixelMeasuresSequence", "SpacingBetweenSlices")
    value = gap or _lookup(ds, None, "PixelMeasuresSequence", "SliceThickness")
    try:
        return abs(float(value))
    except (TypeError, ValueError):
        return 0.0

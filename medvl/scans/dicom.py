"""DICOM specifics: one file (single- or multi-frame), a series folder, and their geometry.

Everything here returns a :class:`DicomImage`: channel-first float32 pixels in output units
(RescaleSlope/Intercept and DoseGridScaling applied, MONOCHROME1 mirrored so that higher is
brighter, colour as RGB) plus the handful of header fields medvl keeps. No identifier ever
leaves this module: the datasets stay local and only :func:`_summary` fields are copied out.

Why pydicom directly and not MONAI's PydicomReader (monai 1.6): its ``get_data`` serialises
the whole header, identifiers included, with ``Dataset.to_json_dict``, and pydicom logs the
invalid values it meets there verbatim (an invalid StudyInstanceUID lands in a WARNING line).
On a folder it orders slices by InstanceNumber, takes the slice spacing from z alone (wrong for
sagittal or oblique stacks), mixes series and only warns on mismatched sizes; on a multi-frame
file its axis swap puts the frames second and its affine ignores the frame positions. It does
not apply MONOCHROME1, palette colour or DoseGridScaling. What is left for a single frame,
``pixel_array * slope + intercept`` and a transpose, is done here.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.data.utils import orientation_ras_lps
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut

from medvl.scans.errors import ScanError

__all__ = ["DICOM_EXTENSIONS", "DicomImage", "read_dicom_file", "read_dicom_series"]

logger = logging.getLogger(__name__)

DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
# (implicit VR, little endian) as pydicom's parser found them -> transfer syntax
_GUESSED_SYNTAX = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}


@dataclass(frozen=True)
class DicomImage:
    """Decoded DICOM pixels with the identifier-free header fields medvl keeps.

    Attributes:
        array: float32, channel first: ``(C, X, Y)`` for one frame, ``(C, X, Y, Z)`` for a
            volume, X along a frame's columns (left to right), Y along its rows (top to bottom).
        affine: 4x4. A volume gets its RAS voxel->world affine in mm (not yet reoriented); a
            single frame gets ``diag(column spacing, row spacing, 1, 1)`` (display coordinates).
        modality: the Modality tag, or None.
        photometric: the file's PhotometricInterpretation (the pixels are already converted).
        study_year: the year of StudyDate, or None.
        window: the first VOI window (WindowCenter, WindowWidth) as ``(center, width)`` in the
            units of ``array`` (see :func:`_voi_window`), or None when the file has none.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str | None
    photometric: str | None
    study_year: int | None
    window: tuple[float, float] | None = None


def read_dicom_file(path: Path) -> DicomImage:
    """Read one DICOM file: a single frame gives a 2D image, several frames a 3D volume."""
    with _quiet_pydicom():
        ds = _dcmread(path, stop_before_pixels=False)
        _require_image(ds, path)
        frames = _decode(ds, path)
        if frames.shape[0] == 1:
            return DicomImage(
                frames[0].transpose(2, 1, 0),
                _affine_2d(ds),
                window=_voi_window(ds, frames[0]),
                **_summary(ds),
            )
        first_group = _frame_groups(ds, frames.shape[0])[0]
        iop = _lookup(ds, first_group, "PlaneOrientationSequence", "ImageOrientationPatient")
        positions = _multiframe_positions(ds, frames.shape[0], iop)
        window = _voi_window(ds, frames[0])
        array, affine = _stack(frames, positions, iop, _pixel_spacing(ds), _slice_gap(ds), path)
        return DicomImage(array, affine, window=window, **_summary(ds))


def read_dicom_series(folder: Path, series_uid: str | None = None) -> DicomImage:
    """Assemble the series in ``folder`` into a volume, slices ordered by their position.

    Headers are read first without pixel data to group the files by SeriesInstanceUID and check
    them; the slices are sorted by the projection of ImagePositionPatient on the slice normal
    (the cross product of the ImageOrientationPatient row and column cosines).
    """
    with _quiet_pydicom():
        return _read_series(folder, series_uid)


_quiet_lock = threading.Lock()
_quiet_state = {"depth": 0, "mode": None}


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Stop pydicom validating values as they are read.

    In its default mode pydicom warns *and logs* each invalid value it converts, quoting it: an
    invalid UID or date would put an identifier into the logs. Validation is a writer's concern;
    this module only reads. The setting is process-wide, so it is counted across threads and
    restored when the last read ends.
    """
    with _quiet_lock:
        if _quiet_state["depth"] == 0:
            _quiet_state["mode"] = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
        _quiet_state["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_state["depth"] -= 1
            if _quiet_state["depth"] == 0:
                config.settings.reading_validation_mode = _quiet_state["mode"]


def _read_series(folder: Path, series_uid: str | None) -> DicomImage:
    series = _images_in_folder(folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path, ds in series:
        groups[str(ds.get("SeriesInstanceUID") or "")].append((path, ds))
    if series_uid is not None:
        if series_uid not in groups:
            raise ScanError(
                f"{folder}: no series with SeriesInstanceUID {series_uid!r}; the folder "
                f"holds:\n{_describe_series(groups)}"
            )
        slices = groups[series_uid]
    elif len(groups) > 1:
        raise ScanError(
            f"{folder}: the folder mixes {len(groups)} DICOM series; pick one with "
            f"load_scan(folder, series_uid=...):\n{_describe_series(groups)}"
        )
    else:
        slices = next(iter(groups.values()))
    _check_same_size(slices, folder)
    if len(slices) == 1:
        return read_dicom_file(slices[0][0])
    if any(_n_frames(ds) > 1 for _, ds in slices):
        raise ScanError(
            f"{folder}: the series mixes multi-frame files with other files; load "
            "each multi-frame file on its own"
        )

    # Order by InstanceNumber (then name) first: it is the fallback when positions are missing,
    # and ``_stack`` sorts stably by position.
    slices.sort(key=lambda s: (_int_or(s[1].get("InstanceNumber"), 0), s[0].name))
    iops = [s[1].get("ImageOrientationPatient") for s in slices]
    ipps = [s[1].get("ImagePositionPatient") for s in slices]
    if all(v is not None for v in iops + ipps):
        iop = np.asarray(iops[0], float)
        distinct = {tuple(np.round(np.asarray(v, float), 3)) for v in iops}
        if len(distinct) > 1:
            raise ScanError(
                f"{folder}: the slices of one series have {len(distinct)} different "
                "orientations (ImageOrientationPatient); is a localizer mixed in?"
            )
        positions = np.asarray(ipps, float)
    else:
        iop, positions = None, None  # ``_stack`` warns
    frames = []
    for path, _ in slices:
        frames.append(_decode(_dcmread(path, stop_before_pixels=False), path))
    first = slices[0][1]
    window = _voi_window(first, frames[0][0])
    array, affine = _stack(
        np.concatenate(frames), positions, iop, _pixel_spacing(first), _slice_gap(first), folder
    )
    return DicomImage(array, affine, window=window, **_summary(first))


# -- reading --------------------------------------------------------------------------------


def _dcmread(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass  # no 128-byte preamble: perhaps an old ACR-NEMA style file, tried below
    except Exception as e:
        raise ScanError(
            f"{path}: cannot read the DICOM header, truncated or corrupt file? "
            f"({type(e).__name__}: {e})"
        ) from e
    # force=True parses almost any bytes into *something*, so keep the result only when it
    # looks like a DICOM object.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        ok = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception as e:
        raise ScanError(
            f"{path}: not a DICOM file (no DICM preamble, and its bytes do not parse "
            "as a DICOM dataset)"
        ) from e
    if not ok:
        raise ScanError(f"{path}: not a DICOM file (no DICM preamble, no SOP class, no image)")
    if "TransferSyntaxUID" not in ds.file_meta:  # needed to decode: say what the parser found
        ds.file_meta.TransferSyntaxUID = _GUESSED_SYNTAX[ds.original_encoding]
    return ds


def _require_image(ds: Dataset, path: Path) -> None:
    if "Rows" not in ds or "Columns" not in ds:
        raise ScanError(
            f"{path}: the DICOM file holds no image (Modality "
            f"{ds.get('Modality') or 'unknown'}, no Rows/Columns)"
        )


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """All frames of ``ds`` as float32 ``(frames, rows, columns, samples)`` in output units."""
    try:
        stored = ds.pixel_array
    except Exception as e:
        raise ScanError(
            f"{path}: cannot decode the pixel data ({_syntax(ds)}), truncated or "
            f"corrupt file? ({type(e).__name__}: {e})"
        ) from e
    if _photometric(ds) == "PALETTE COLOR":
        stored = apply_color_lut(stored, ds)
    n = _n_frames(ds)
    stored = stored.reshape(n, int(ds.Rows), int(ds.Columns), -1)
    if stored.shape[-1] > 1:  # colour: nothing to rescale
        return stored.astype(np.float32)
    out = np.empty(stored.shape, np.float32)
    for k, group in enumerate(_frame_groups(ds, n)):
        slope, intercept = _rescale(ds, group)
        out[k] = _finish_values(stored[k] * slope + intercept, ds, slope, intercept)
    return out


def _finish_values(
    values: np.ndarray, ds: Dataset, slope: float, intercept: float, pivot: float | None = None
) -> np.ndarray:
    """Dose scaling and MONOCHROME1 on rescaled grayscale values.

    ``pivot`` overrides the MONOCHROME1 mirror point (``pivot - value``) of float pixel data,
    which is the frame's own min + max: for values that are not a whole frame (a VOI window).
    """
    if str(ds.get("Modality") or "") == "RTDOSE" and ds.get("DoseGridScaling"):
        values = values * float(ds.DoseGridScaling)  # stored integers -> Gy
    if _photometric(ds) == "MONOCHROME1":
        # MONOCHROME1 displays low values bright. Mirror within the nominal stored range
        # (through the rescale), not the image's own min/max, so slices of a series agree.
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            return (values.min() + values.max() if pivot is None else pivot) - values
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        # lo + hi of the stored range: -1 if signed (-2^(b-1) .. 2^(b-1)-1), else 2^b - 1
        span = -1 if ds.get("PixelRepresentation") else 2**bits - 1
        values = span * slope + 2 * intercept - values
    return values


def _voi_window(ds: Dataset, first_frame: np.ndarray) -> tuple[float, float] | None:
    """The first VOI window of ``ds`` as ``(center, width)`` in the units load_scan returns.

    WindowCenter/WindowWidth (PS3.3 C.11.2) apply to the output of the modality LUT, i.e. the
    rescaled values. The pixels medvl returns are also dose-scaled (RTDOSE) and, for
    MONOCHROME1, mirrored; the window's two ends go through the same mapping so that it still
    selects the same tissue. Enhanced multi-frame files keep it in FrameVOILUTSequence (the
    first frame's is taken). A non-linear VOILUTSequence is ignored; a window whose width is
    not positive, or a colour image (VOI LUTs apply to grayscale only), gives None.

    Args:
        ds: the dataset (its first frame's window is returned).
        first_frame: the first frame's output values, ``(rows, columns, samples)``: their min +
            max is the MONOCHROME1 mirror point of float pixel data.
    """
    if first_frame.shape[-1] != 1:
        return None
    group = _frame_groups(ds, _n_frames(ds))[0]
    center = _first_float(_lookup(ds, group, "FrameVOILUTSequence", "WindowCenter"))
    width = _first_float(_lookup(ds, group, "FrameVOILUTSequence", "WindowWidth"))
    if center is None or width is None or not width > 0:
        return None
    slope, intercept = _rescale(ds, group)
    pivot = float(first_frame.min()) + float(first_frame.max())
    ends = np.array([center - width / 2, center + width / 2], dtype=np.float64)
    lo, hi = sorted(float(v) for v in _finish_values(ends, ds, slope, intercept, pivot))
    return (lo + hi) / 2, hi - lo


# -- folders --------------------------------------------------------------------------------


def _images_in_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if not files:
        hint = ", ".join(p.name for p in entries if p.is_dir())[:200]
        hint = f"; it has subfolders ({hint}): load the one holding the slices" if hint else ""
        raise ScanError(f"{folder}: the folder holds no DICOM files{hint}")
    images = []
    for path in files:
        if path.suffix.lower() not in DICOM_EXTENSIONS and not pydicom.misc.is_dicom(path):
            logger.debug("%s: skipped, not a DICOM file", path)
            continue
        ds = _dcmread(path, stop_before_pixels=True)  # a corrupt .dcm stops the load
        if "Rows" in ds and "Columns" in ds:
            images.append((path, ds))
        else:  # DICOMDIR, structure sets, reports... live beside images
            logger.debug("%s: skipped, a DICOM file without an image", path)
    if not images:
        raise ScanError(f"{folder}: none of its {len(files)} files is a DICOM image")
    return images


def _describe_series(groups: dict[str, list[tuple[Path, Dataset]]]) -> str:
    lines = []
    for uid, slices in groups.items():
        desc = str(slices[0][1].get("SeriesDescription") or "")
        lines.append(
            f"  series_uid={uid or '<missing>'!r}: {len(slices)} "
            f"slice{'s' if len(slices) > 1 else ''}, SeriesDescription {desc!r}"
        )
    return "\n".join(lines)


def _check_same_size(slices: list[tuple[Path, Dataset]], folder: Path) -> None:
    sizes: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for path, ds in slices:
        key = (int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel") or 1))
        sizes[key].append(path.name)
    if len(sizes) > 1:
        parts = [
            f"{r}x{c}{'x' + str(s) if s > 1 else ''} in {len(names)} file(s) (e.g. {names[0]})"
            for (r, c, s), names in sizes.items()
        ]
        raise ScanError(f"{folder}: slices of different sizes (rows x columns): {'; '.join(parts)}")


# -- geometry -------------------------------------------------------------------------------


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


# -- small header helpers -------------------------------------------------------------------


def _summary(ds: Dataset) -> dict:
    """The only header fields that leave this module (no identifiers)."""
    date = str(ds.get("StudyDate") or "")
    return {
        "modality": str(ds.get("Modality") or "").strip().upper() or None,
        "photometric": _photometric(ds) or None,
        "study_year": int(date[:4]) if date[:4].isdigit() else None,
    }


def _first_float(value) -> float | None:
    """A DS/IS value, or the first of several (VM > 1), as a finite float; else None."""
    if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation") or "").strip().upper()


def _syntax(ds: Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return uid.name if uid else "unknown transfer syntax"


def _n_frames(ds: Dataset) -> int:
    return max(_int_or(ds.get("NumberOfFrames"), 1), 1)


def _int_or(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _frame_groups(ds: Dataset, n: int) -> list:
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    return list(seq) if seq is not None and len(seq) == n else [None] * n


def _item(group, sequence: str, keyword: str):
    seq = group.get(sequence) if group is not None else None
    return seq[0].get(keyword) if seq else None


def _lookup(ds: Dataset, frame_group, sequence: str, keyword: str):
    """``keyword`` where enhanced files keep it (this frame's functional group, then the shared
    one), else at the top level as in classic files."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (frame_group, shared[0] if shared else None):
        value = _item(group, sequence, keyword)
        if value is not None:
            return value
    return ds.get(keyword)


def _rescale(ds: Dataset, frame_group) -> tuple[float, float]:
    slope = _lookup(ds, frame_group, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _lookup(ds, frame_group, "PixelValueTransformationSequence", "RescaleIntercept")
    return (
        float(slope) if slope not in (None, "") else 1.0,
        float(intercept) if intercept not in (None, "") else 0.0,
    )

"""DICOM specifics: one file (single- or multi-frame), a series folder, and their geometry.

Everything here returns a :class:`DicomImage`: channel-first float32 pixels in output units
(RescaleSlope/Intercept and DoseGridScaling applied, MONOCHROME1 mirrored so that higher is
brighter, colour as RGB) plus the handful of header fields medvl keeps. No identifier ever
leaves this module: the datasets stay local and only :func:`_summary` fields are copied out.

This module assembles: the public readers, series grouping, checking and ordering. Per-file
decoding (reading headers, pixel values in output units, the VOI window, header look-ups) lives in
:mod:`medvl.scans.dicom_values`, and the geometry (frames to a volume and its RAS affine, frame
positions, spacing) in :mod:`medvl.scans.dicom_geometry`; both only serve this module.

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
from pydicom import config
from pydicom.dataset import Dataset

from medvl.scans.dicom_geometry import (
    _affine_2d,
    _multiframe_positions,
    _pixel_spacing,
    _slice_gap,
    _stack,
    header_numbers,
)
from medvl.scans.dicom_values import (
    _dcmread,
    _decode,
    _frame_groups,
    _int_or,
    _lookup,
    _n_frames,
    _photometric,
    _require_image,
    _voi_window,
)
from medvl.scans.errors import ScanError

__all__ = ["DICOM_EXTENSIONS", "DicomImage", "read_dicom_file", "read_dicom_series"]

logger = logging.getLogger(__name__)

DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")


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
        oriented: False for a volume without ImagePositionPatient/ImageOrientationPatient (a
            cine loop, an ultrasound sweep): its axes are the file's, not the patient's.
        skipped: Names of a series folder's unreadable files left out (``skip_unreadable``).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str | None
    photometric: str | None
    study_year: int | None
    window: tuple[float, float] | None = None
    oriented: bool = True
    skipped: tuple[str, ...] = ()


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
        oriented = positions is not None and iop is not None
        return DicomImage(array, affine, window=window, oriented=oriented, **_summary(ds))


def read_dicom_series(
    folder: Path, series_uid: str | None = None, skip_unreadable: bool = False
) -> DicomImage:
    """Assemble the series in ``folder`` into a volume, slices ordered by their position.

    Headers are read first without pixel data to group the files by SeriesInstanceUID and check
    them; the slices are sorted by the projection of ImagePositionPatient on the slice normal
    (the cross product of the ImageOrientationPatient row and column cosines). A file that
    should be a slice (a DICOM extension, or none) but cannot be read stops the load, unless
    ``skip_unreadable``: then it is left out and named in ``DicomImage.skipped``. Files with
    other extensions (``.txt``, ``.json``...) are not slices and are passed over.
    """
    with _quiet_pydicom():
        return _read_series(folder, series_uid, skip_unreadable)


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


def _read_series(folder: Path, series_uid: str | None, skip_unreadable: bool) -> DicomImage:
    series, skipped = _images_in_folder(folder, skip_unreadable)
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
        iops = [header_numbers(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", p)
                for p, ds in slices]  # fmt: skip
        ipps = [header_numbers(ds.ImagePositionPatient, 3, "ImagePositionPatient", p)
                for p, ds in slices]  # fmt: skip
        iop = iops[0]
        distinct = {tuple(np.round(v, 3)) for v in iops}
        if len(distinct) > 1:
            raise ScanError(
                f"{folder}: the slices of one series have {len(distinct)} different "
                "orientations (ImageOrientationPatient); is a localizer mixed in?"
            )
        positions = np.stack(ipps)
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
    oriented = positions is not None and iop is not None
    return DicomImage(array, affine, window=window, oriented=oriented, skipped=tuple(skipped),
                      **_summary(first))  # fmt: skip


# -- folders --------------------------------------------------------------------------------


def _images_in_folder(
    folder: Path, skip_unreadable: bool
) -> tuple[list[tuple[Path, Dataset]], list[str]]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if not files:
        hint = ", ".join(p.name for p in entries if p.is_dir())[:200]
        hint = f"; it has subfolders ({hint}): load the one holding the slices" if hint else ""
        raise ScanError(f"{folder}: the folder holds no DICOM files{hint}")
    images, skipped = [], []
    for path in files:
        slice_like = path.suffix.lower() in DICOM_EXTENSIONS or _no_extension(path)
        if not slice_like and not pydicom.misc.is_dicom(path):
            logger.debug("%s: passed over, not a DICOM file", path)
            continue
        try:
            ds = _dcmread(path, stop_before_pixels=True)
        except ScanError as e:
            if not skip_unreadable:
                raise ScanError(
                    f"{e}\n(in the series folder {folder}: remove the file, or load with "
                    "load_scan(folder, skip_unreadable=True) to build the volume without it)"
                ) from e
            logger.warning("%s: left out of the series, unreadable", path)
            skipped.append(path.name)
            continue
        if "Rows" in ds and "Columns" in ds:
            images.append((path, ds))
        else:  # DICOMDIR, structure sets, reports... live beside images
            logger.debug("%s: passed over, a DICOM file without an image", path)
    if not images:
        raise ScanError(f"{folder}: none of its {len(files)} files is a DICOM image")
    return images, skipped


def _no_extension(path: Path) -> bool:
    """No extension, or a numeric one (``IM0001``, ``1.2.840.10008.1``: slices' usual names)."""
    return not path.suffix or path.suffix[1:].isdigit()


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


# -- header fields -------------------------------------------------------------------------


def _summary(ds: Dataset) -> dict:
    """The only header fields that leave this module (no identifiers)."""
    date = str(ds.get("StudyDate") or "")
    return {
        "modality": str(ds.get("Modality") or "").strip().upper() or None,
        "photometric": _photometric(ds) or None,
        "study_year": int(date[:4]) if date[:4].isascii() and date[:4].isdigit() else None,
    }

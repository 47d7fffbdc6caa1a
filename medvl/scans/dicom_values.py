"""DICOM per-file decoding: reading a header or file, pixel values in output units, the VOI
window, and the small header look-ups (classic and enhanced multi-frame) the rest builds on.

Split out of :mod:`medvl.scans.dicom`, which is the only caller: the datasets read here go back to
it and stay there; only its ``_summary`` fields leave. Pixel values come back with
RescaleSlope/Intercept and DoseGridScaling applied, MONOCHROME1 mirrored so that higher is
brighter and palette colour as RGB: MONAI's PydicomReader applies none of the last three (see
:mod:`medvl.scans.dicom` for why it is not used at all). Read only inside
``medvl.scans.dicom._quiet_pydicom()``: outside it pydicom logs the invalid values it converts,
identifiers included, verbatim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut

from medvl.scans.errors import ScanError

# (implicit VR, little endian) as pydicom's parser found them -> transfer syntax
_GUESSED_SYNTAX = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}


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
    # force=True parses almost any bytes into *something* (and an all-zero file for minutes),
    # so first require that the file starts like a DICOM dataset without a preamble.
    _require_dataset_start(path)
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


def _require_dataset_start(path: Path) -> None:
    """A file without the DICM preamble is parsed only if a plausible first DICOM tag (group
    0x0002 or 0x0008, little or big endian) sits within its first bytes; else a ScanError at
    once (an all-zero file would keep the forced parser busy for minutes)."""
    with open(path, "rb") as f:
        head = f.read(12)
    starts = range(min(4, max(0, len(head) - 1)))
    groups = {int.from_bytes(head[i : i + 2], order) for i in starts for order in ("little", "big")}
    if len(head) < 8 or not groups & {0x0002, 0x0008}:
        what = "empty" if not head else "all zeros" if not any(head) else f"starts {head[:8].hex()}"
        raise ScanError(
            f"{path}: not a DICOM file (no DICM preamble, and it does not start with a DICOM "
            f"element: {what})"
        )


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
        try:
            stored = apply_color_lut(stored, ds)
        except Exception as e:
            raise ScanError(
                f"{path}: a PALETTE COLOR image whose colour table cannot be applied (the "
                f"Red/Green/Blue Palette Color Lookup Table tags missing or broken? {e})"
            ) from e
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
        values = values * _number(ds, "DoseGridScaling", ds.DoseGridScaling, 1.0)  # -> Gy
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


# -- small header helpers -------------------------------------------------------------------


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
    return _number(ds, "RescaleSlope", slope, 1.0), _number(ds, "RescaleIntercept", intercept, 0.0)


def _number(ds: Dataset, keyword: str, value, default: float) -> float:
    """A header number, ``default`` when absent; a ScanError naming the tag and its value when
    it is not a finite number (a decimal comma, text)."""
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        hint = " (a decimal comma? DICOM numbers use a point)" if "," in str(value) else ""
        raise ScanError(f"{_where(ds)}: {keyword} is {str(value)!r}, not a finite number{hint}")
    return number


def _where(ds: Dataset) -> str:
    return str(getattr(ds, "filename", None) or "the DICOM file")

"""``load_scan``: one entry point from a scan file or DICOM folder to a MetaTensor.

Output contract (other medvl modules rely on it):

- channel-first float32 :class:`monai.data.MetaTensor`, C = 1 (grayscale) or 3 (RGB);
- 3D: shape ``(C, X, Y, Z)`` oriented RAS, ``affine`` the RAS voxel->world affine in mm;
- 2D: shape ``(C, W, H)``, axis 0 is x (columns, left to right as displayed), axis 1 is y
  (rows, top to bottom) -- MONAI's PILReader convention -- and ``affine`` is
  ``diag(x spacing, y spacing, 1, 1)``;
- ``meta`` holds only :data:`META_KEYS` (plus the ``affine`` and ``space`` keys MetaTensor
  keeps itself): never reader metadata, so never a patient identifier. ``meta["window"]`` is
  the DICOM VOI window ``(center, width)`` in the returned values' units, or None.
"""

from __future__ import annotations

import gzip
import logging
import operator
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.data.utils import affine_to_spacing
from monai.transforms import Orientation
from PIL import Image, ImageOps

from medvl.scans.dicom import DICOM_EXTENSIONS, DicomImage, read_dicom_file, read_dicom_series
from medvl.scans.errors import ScanError

__all__ = ["MAX_PIXELS", "META_KEYS", "SUPPORTED_EXTENSIONS", "load_scan"]

logger = logging.getLogger(__name__)

#: File name endings load_scan recognises, and the ``meta["format"]`` each gives. A folder is
#: read as a DICOM series ("dicom-series"); a file with a DICM preamble is DICOM whatever its name.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    **dict.fromkeys(DICOM_EXTENSIONS, "dicom"),
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
#: The only keys load_scan puts in ``meta`` (MetaTensor itself adds ``affine`` and ``space``).
META_KEYS = (
    "source",
    "format",
    "modality",
    "spacing",
    "spatial_ndim",
    "orientation",
    "study_year",
    "photometric",
    "window",
    "skipped",
)
#: Default cap on a PNG/JPEG's pixels (``load_scan(max_pixels=...)``): 64 megapixels, far above
#: any radiograph or fundus photograph, far below what a 2-core, 24 GB machine can hold.
MAX_PIXELS = 64_000_000
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
_PIL_KEEP_MODES = {"L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"}


def load_scan(
    path: str | os.PathLike,
    modality: str | None = None,
    *,
    series_uid: str | None = None,
    volume: int | None = None,
    max_pixels: int = MAX_PIXELS,
    skip_unreadable: bool = False,
) -> MetaTensor:
    """Load a scan as a channel-first float32 MetaTensor (3D: RAS; 2D: as displayed).

    Supported inputs: a DICOM file (single-frame -> 2D, multi-frame -> 3D), a folder holding a
    DICOM series (slices ordered by their position along the slice normal, not by
    InstanceNumber), NIfTI (``.nii``, ``.nii.gz``), PNG and JPEG (grayscale or RGB). DICOM
    values come out in physical units: RescaleSlope/Intercept (and RTDOSE's DoseGridScaling)
    applied, MONOCHROME1 mirrored so that higher is brighter, YBR and palette colour as RGB.

    Args:
        path: file or DICOM series folder.
        modality: DICOM modality code (``"CT"``, ``"MR"``, ``"CR"``...) overriding the file's
            Modality tag; without either, ``"OT"``.
        series_uid: for a folder holding several series, the SeriesInstanceUID to load
            (the error raised without it lists them).
        volume: for a 4D NIfTI, the index along the 4th axis of the volume to load.
        max_pixels: the most pixels a PNG/JPEG may have (checked from its header, before
            decoding: a small file can claim a huge image).
        skip_unreadable: for a DICOM series folder, leave out files that should be slices
            but cannot be read (``meta["skipped"]`` names them) instead of failing.

    Returns:
        MetaTensor of shape ``(C, X, Y, Z)`` (3D) or ``(C, W, H)`` (2D). ``meta`` keys:
        ``source``, ``format`` (``"dicom"``, ``"dicom-series"``, ``"nifti"``, ``"png"``,
        ``"jpeg"``), ``modality``, ``spacing`` (mm per spatial axis; 1.0 where the file does not
        say), ``spatial_ndim``, ``orientation`` (``"RAS"``; None for 2D and for a DICOM volume
        without patient geometry, whose axes are the file's), ``study_year``
        (DICOM StudyDate year or None), ``photometric`` (the DICOM PhotometricInterpretation,
        None for other formats), ``window`` (the file's first DICOM VOI window as ``(center,
        width)`` floats in the units of the returned values -- rescaled, and for MONOCHROME1
        mirrored with the pixels -- or None: no window, or not DICOM), ``skipped`` (names of a
        series' unreadable files left out with ``skip_unreadable``; empty otherwise), and
        MetaTensor's own ``affine`` and ``space``. No patient identifier.

    Note:
        A folder holding one single-frame image loads as that 2D image. DICOM volumes without
        ImagePositionPatient/ImageOrientationPatient (e.g. ultrasound cine) keep their stored
        axes (x columns, y rows, z frames) with a diagonal affine, and a warning is logged.

    Raises:
        ScanError: the path is missing, of an unknown type, unreadable, truncated or corrupt,
            holds non-finite values, several series, slices of different sizes, or a 4D
            NIfTI without ``volume``. The message names the file and the problem.

    Example:
        >>> from medvl.scans import example_scans, load_scan
        >>> ct = load_scan(example_scans()["ct_small"])
        >>> tuple(ct.shape), ct.meta["modality"], ct.meta["spacing"]
        ((1, 128, 128), 'CT', (0.661468, 0.661468))
    """
    if not str(path).strip():  # Path("") is the working folder, which would be read as a series
        raise ScanError("empty path: give a scan file or a DICOM series folder")
    src = Path(path).expanduser()
    if modality is not None and not (isinstance(modality, str) and modality.strip()):
        raise ScanError(f"{src}: modality must be a DICOM code such as 'CT', got {modality!r}")
    if not src.exists():
        raise ScanError(f"{src}: no such file or folder")
    _require_regular(src)
    fmt = _format_of(src)
    if series_uid is not None and fmt != "dicom-series":
        raise ScanError(f"{src}: series_uid only applies to a DICOM series folder")
    if skip_unreadable and fmt != "dicom-series":
        raise ScanError(f"{src}: skip_unreadable only applies to a DICOM series folder")
    if volume is not None and fmt != "nifti":
        raise ScanError(f"{src}: volume only applies to a NIfTI file")

    try:  # the one guard: whatever a reader lets escape becomes a ScanError naming the file
        image = _read(src, fmt, series_uid, volume, max_pixels, skip_unreadable)
    except ScanError:
        raise
    except MemoryError as e:
        raise ScanError(f"{src}: too large to load into this machine's memory") from e
    except Exception as e:
        raise ScanError(f"{src}: cannot be read as {fmt} ({type(e).__name__}: {e})") from e
    array, affine = image.array, image.affine
    photometric, study_year, file_modality = image.photometric, image.study_year, image.modality
    window, oriented = image.window, image.oriented

    _check_values(array, src)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ScanError(f"{src}: {bad} of {tensor.numel()} values are not finite (NaN or inf)")
    ndim = tensor.ndim - 1
    affine_t = torch.as_tensor(affine, dtype=torch.float64)
    if ndim == 3:
        tensor, affine_t = _to_ras(tensor, affine_t, src)
    meta = {
        "source": str(src),
        "format": fmt,
        "modality": (modality or file_modality or "OT").strip().upper(),
        "spacing": tuple(float(s) for s in affine_to_spacing(affine_t, r=ndim)),
        "spatial_ndim": ndim,
        "orientation": "RAS" if ndim == 3 and oriented else None,
        "study_year": study_year,
        "photometric": photometric,
        "window": window,
        "skipped": image.skipped,
    }
    logger.debug(
        "loaded %s (%s, %s): shape %s, spacing %s",
        src,
        fmt,
        meta["modality"],
        tuple(tensor.shape),
        meta["spacing"],
    )
    return MetaTensor(tensor, affine=affine_t, meta=meta)


def _read(
    src: Path, fmt: str, series_uid: str | None, volume: int | None, max_pixels: int,
    skip_unreadable: bool,
) -> DicomImage:
    """The file's pixels, affine and header facts (non-DICOM formats have no header facts)."""
    if fmt == "dicom-series":
        return read_dicom_series(src, series_uid, skip_unreadable)
    if fmt == "dicom":
        return read_dicom_file(src)
    if fmt == "nifti":
        return DicomImage(*_read_nifti(src, volume), None, None, None)
    return DicomImage(_read_pil(src, max_pixels), np.eye(4), None, None, None)


def _require_regular(src: Path) -> None:
    """Only regular files and folders are opened: a FIFO or a device (a ``.dcm`` link to
    ``/dev/zero``) would block or never end."""
    mode = src.stat().st_mode  # follows links
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device"
            if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "not a regular file")  # fmt: skip
    raise ScanError(f"{src}: {kind}, not a file; give a scan file or a DICOM series folder")


def _check_values(array: np.ndarray, src: Path) -> None:
    """Empty, complex and out-of-float32-range arrays are errors (they would load wrong)."""
    if array.size == 0:
        raise ScanError(f"{src}: the image is empty (shape {tuple(array.shape)})")
    if np.iscomplexobj(array):
        raise ScanError(
            f"{src}: complex values ({array.dtype}); medvl loads real images: save the "
            "magnitude (np.abs) or the real part (np.real) as a new file"
        )
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        finite = np.isfinite(array)
        largest = float(np.abs(array[finite]).max()) if finite.any() else 0.0
        if largest > float(np.finfo(np.float32).max):
            raise ScanError(
                f"{src}: values up to {largest:.3g} exceed float32's range (±3.4e38), which "
                "medvl loads into; rescale the data"
            )


def _format_of(src: Path) -> str:
    if src.is_dir():
        return "dicom-series"
    name = src.name.lower()
    for ending, fmt in SUPPORTED_EXTENSIONS.items():
        if name.endswith(ending):
            return fmt
    if pydicom.misc.is_dicom(src):  # DICOM files often carry no extension at all
        return "dicom"
    raise ScanError(
        f"{src}: unknown file type {''.join(src.suffixes) or '(no extension)'!r}; "
        f"supported: {', '.join(SUPPORTED_EXTENSIONS)}, a file with a DICOM (DICM) "
        "preamble, or a folder holding a DICOM series"
    )


def _to_ras(
    tensor: torch.Tensor, affine: torch.Tensor, src: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorient a (C, X, Y, Z) tensor to RAS with MONAI's Orientation."""
    try:
        out = Orientation(axcodes="RAS", labels=_RAS_LABELS)(MetaTensor(tensor, affine=affine))
    except Exception as e:
        raise ScanError(
            f"{src}: cannot orient the volume to RAS, degenerate affine?\n{affine.numpy()}"
        ) from e
    return out.as_tensor().contiguous(), out.affine.to(torch.float64)


def _read_nifti(src: Path, volume: int | None) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI through MONAI's NibabelReader, as ((1, X, Y, Z), affine).

    ``read`` and ``get_data`` are called separately, rather than through LoadImage, so that a
    4D file can be cut to one volume (lazily, with nibabel's slicer) before any voxel is read.
    """
    reader = NibabelReader()
    try:
        img = reader.read(str(src))
    except Exception as e:
        raise ScanError(
            f"{src}: not a readable NIfTI file, truncated or corrupt? ({type(e).__name__}: {e})"
        ) from e
    shape = tuple(int(s) for s in img.shape)
    _check_nifti_size(img, src)
    if len(shape) > 4:
        raise ScanError(f"{src}: a {len(shape)}D NIfTI of shape {shape}; medvl loads 2D and 3D")
    if len(shape) == 4 and shape[3] > 1 and volume is None:
        raise ScanError(
            f"{src}: a 4D NIfTI of shape {shape} holds {shape[3]} volumes; pick one with "
            f"load_scan(path, volume=k), k in 0..{shape[3] - 1}"
        )
    if volume is not None:
        count = shape[3] if len(shape) == 4 else 1
        try:
            volume = operator.index(volume)  # ints, numpy ints; not floats
        except TypeError as e:
            raise ScanError(f"{src}: volume must be an integer, got {volume!r}") from e
        if not 0 <= volume < count:
            raise ScanError(
                f"{src}: volume={volume!r} is out of range, the file holds {count} "
                f"volume{'s' if count > 1 else ''} (0..{count - 1})"
            )
    if len(shape) == 4:
        img = img.slicer[..., volume or 0]
    try:
        array, _ = reader.get_data(img)  # its metadata is the raw header: not passed on
    except Exception as e:
        raise ScanError(
            f"{src}: cannot read the voxel data, truncated or corrupt file? "
            f"({type(e).__name__}: {e})"
        ) from e
    array = np.asarray(array)
    while array.ndim < 3:  # a 2D NIfTI is a volume one slice thick
        array = array[..., None]
    return array[None], np.asarray(img.affine, dtype=np.float64)


def _check_nifti_size(img, src: Path) -> None:
    """The header's claimed data size against the file's, before any voxel is allocated: a
    few-KB file claiming 2048 x 1024 x 1024 voxels must not cost gigabytes to refuse."""
    header = img.header
    dtype = header.get_data_dtype()
    if dtype.kind == "c":
        raise ScanError(
            f"{src}: complex voxel values ({dtype}); medvl loads real images: save the "
            "magnitude (np.abs) or the real part (np.real) as a new NIfTI"
        )
    shape = tuple(int(s) for s in img.shape)
    if 0 in shape:
        raise ScanError(f"{src}: the header's shape {shape} has an empty axis")
    offset = int(header.get("vox_offset", 0))
    claimed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + offset
    if src.name.lower().endswith(".gz"):
        held, what = _gunzipped_size(src, claimed), "decompresses to"
    else:
        held, what = src.stat().st_size, "holds"
    if held < claimed:
        raise ScanError(
            f"{src}: the header claims {' x '.join(map(str, shape))} voxels of {dtype} "
            f"({claimed} bytes with the header) but the file {what} {held} bytes: truncated, "
            "or a corrupt header"
        )


def _gunzipped_size(src: Path, enough: int) -> int:
    """How many bytes ``src`` decompresses to (at most ``enough`` counted): gzip's own record
    (its last 4 bytes, the size modulo 2**32) when ``enough`` is below 4 GiB, else counted by
    decompressing in chunks, so a small file claiming gigabytes costs no memory."""
    if enough < 2**32:
        with open(src, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    count = 0
    with gzip.open(src, "rb") as f:
        while count < enough and (chunk := f.read(1 << 24)):
            count += len(chunk)
    return count


def _read_pil(src: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """PNG/JPEG through MONAI's PILReader, as (C, W, H), refused above ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(src) as probe:
                width, height = probe.size
    except Exception as e:
        raise ScanError(
            f"{src}: not a readable {src.suffix.lstrip('.').upper()} image, truncated "
            f"or corrupt? ({type(e).__name__}: {e})"
        ) from e
    if width * height > max_pixels:
        raise ScanError(
            f"{src}: {width} x {height} = {width * height:,} pixels, more than the "
            f"{max_pixels:,} allowed (load_scan(..., max_pixels=...) raises the cap)"
        )
    reader = PILReader(converter=_display_mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            array, _ = reader.get_data(reader.read(str(src)))
    except Exception as e:
        raise ScanError(
            f"{src}: not a readable {src.suffix.lstrip('.').upper()} image, truncated "
            f"or corrupt? ({type(e).__name__}: {e})"
        ) from e
    array = np.asarray(array)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _display_mode(image: Image.Image) -> Image.Image:
    """Bring a PIL image to what it looks like: EXIF rotation applied, one or three channels.

    Without this, PILReader returns palette indices for "P" images and four channels for RGBA.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _PIL_KEEP_MODES:
        return image
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    return image.convert("RGB")

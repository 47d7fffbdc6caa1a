"""A corpus of unusual and broken scans, built at test time from files packages ship.

``build(folder)`` writes every input and returns ``{name: Case}``; each case says what
``load_scan`` must do with it: load with a given shape (and spacing), or raise a ``ScanError``
whose message contains given words. ``python tests/scans/hostile_corpus.py CASES.json OUT.json``
loads every case in that process, each under an alarm, and writes the outcomes; ``--peak PATH``
prints the peak memory growth of loading one file. ``test_hostile_inputs.py`` runs both in
child processes with a timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

SECONDS = 20  # a case that takes longer than this is a hang


@dataclass
class Case:
    """An input and its expected outcome: ``shape`` (loads) or ``error`` words (ScanError)."""

    path: str
    shape: tuple[int, ...] | None = None
    error: tuple[str, ...] = ()
    spacing: tuple[float, ...] | None = None
    kwargs: dict = field(default_factory=dict)


def _pydicom(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def _nibabel(name: str) -> Path:
    return Path(nib.__file__).parent / "tests" / "data" / name


def _altered(folder: Path, name: str, source: str, change: Callable) -> Path:
    ds = pydicom.dcmread(_pydicom(source))
    change(ds)
    out = folder / f"{name}.dcm"
    ds.save_as(out, enforce_file_format=False)
    return out


def _series(folder: Path, name: str, change: Callable | None = None, n: int = 4) -> Path:
    """A small CT series made of MR_small's pixels, slice k at z = 5k; ``change(ds, k)``."""
    out = folder / name
    out.mkdir()
    base = pydicom.dcmread(_pydicom("CT_small.dcm"))
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{k}"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        if change is not None:
            change(ds, k)
        ds.save_as(out / f"{k:03d}.dcm", enforce_file_format=False)
    return out


def _set(**values) -> Callable:
    def change(ds) -> None:
        for key, value in values.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)

    return change


def _nifti(folder: Path, name: str, data: np.ndarray, zooms=None) -> Path:
    img = nib.Nifti1Image(data, np.eye(4))
    if zooms is not None:
        img.header.set_zooms(zooms)
    out = folder / name
    nib.save(img, out)
    return out


def _write(folder: Path, name: str, data: bytes) -> Path:
    out = folder / name
    out.write_bytes(data)
    return out


def _png(folder: Path, name: str, image: Image.Image, **save) -> Path:
    out = folder / name
    image.save(out, **save)
    return out


def _huge_png(folder: Path, width: int, height: int) -> Path:
    """A valid grey PNG of ``width x height`` zeros, a few hundred KB on disk."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (width + 1)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
           0, 0)) + chunk(b"IDAT", data) + chunk(b"IEND", b""))  # fmt: skip
    return _write(folder, "huge.png", png)


def _huge_nifti_header(folder: Path, gz: bool = False) -> Path:
    """A few-KB .nii (or .nii.gz) whose header claims 2048 x 1024 x 1024 float32 voxels."""
    import gzip

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape((2048, 1024, 1024))
    data = img.header.binaryblock + b"\0" * 4 + b"\0" * 4096
    out = folder / ("claims_8gib.nii.gz" if gz else "claims_8gib.nii")
    out.write_bytes(gzip.compress(data) if gz else data)
    return out


def build(folder: str | Path) -> dict[str, Case]:  # noqa: PLR0915 - one line per case
    """Write every input under ``folder``; return the cases by name."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def case(name: str, path: Path | str, **expected) -> None:
        cases[name] = Case(str(path), **expected)

    # -- DICOM files that load -----------------------------------------------------------
    case("ct_small", _pydicom("CT_small.dcm"), shape=(1, 128, 128), spacing=(0.661468, 0.661468))
    for variant in ("MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                    "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_padded.dcm"):  # fmt: skip
        case(variant, _pydicom(variant), shape=(1, 64, 64), spacing=(0.3125, 0.3125))
    case("rtdose", _pydicom("rtdose.dcm"), shape=(1, 10, 10, 15))
    case("ybr_cine", _pydicom("examples_ybr_color.dcm"), shape=(3, 320, 240, 30))
    case("palette", _pydicom("examples_palette.dcm"), shape=(3, 800, 350))
    case("rgb_rle", _pydicom("SC_rgb_rle.dcm"), shape=(3, 100, 100))
    case("rgb_2frame", _pydicom("SC_rgb_rle_2frame.dcm"), shape=(3, 100, 100, 2))
    case("deflated", _pydicom("image_dfl.dcm"), shape=(1, 512, 512))
    case("header_only_no_meta", _pydicom("no_meta.dcm"), error=("no_meta.dcm", "no image"))
    extensionless = f / "IM0001"
    shutil.copyfile(_pydicom("CT_small.dcm"), extensionless)
    case("no_extension", extensionless, shape=(1, 128, 128))
    case("series", _series(f, "series"), shape=(1, 128, 128, 4), spacing=(0.661468, 0.661468, 5.0))
    odd_date = _pydicom("CT_small.dcm").read_bytes().replace(b"20040119", "²٠٢٠".encode(), 1)
    case("study_date_odd_digits", _write(f, "date.dcm", odd_date), shape=(1, 128, 128))
    # Spacing that cannot be physical: loads at 1.0 mm, with a warning naming the fallback.
    for label, value in (("inf", ["inf", "inf"]), ("zero", [0, 0]), ("negative", [-1, -1]),
                         ("nan", ["nan", "nan"])):  # fmt: skip
        path = _altered(f, f"spacing_{label}", "CT_small.dcm", _set(PixelSpacing=value))
        case(f"pixel_spacing_{label}", path, shape=(1, 128, 128), spacing=(1.0, 1.0))

    # -- DICOM files that must fail clearly ------------------------------------------------
    def comma(source: str, keyword: str, text: str) -> Path:
        """``keyword`` written as ``text`` (8 characters with a decimal comma, as some exporters
        write numbers); pydicom will not write it, so a placeholder's bytes are replaced."""
        placeholder = "9.876543"
        path = _altered(f, keyword, source, _set(**{keyword: placeholder}))
        data = path.read_bytes()
        assert data.count(placeholder.encode()) == 1 and len(text) == len(placeholder)
        path.write_bytes(data.replace(placeholder.encode(), text.encode()))
        return path

    for keyword in ("RescaleSlope", "RescaleIntercept"):
        case(f"{keyword}_comma", comma("CT_small.dcm", keyword, "1,000000"),
             error=(keyword, "'1,000000'", "decimal comma"))  # fmt: skip
    case("DoseGridScaling_comma", comma("rtdose.dcm", "DoseGridScaling", "0,000050"),
         error=("DoseGridScaling", "0,000050"))  # fmt: skip
    commas = _series(f, "ipp_comma", lambda ds, k: setattr(ds, "ImagePositionPatient",
                                                         ["0", "0", "9.876543"]))  # fmt: skip
    for k, path in enumerate(sorted(commas.iterdir())):
        path.write_bytes(path.read_bytes().replace(b"9.876543", f"{k},500000".encode()))
    case("series_ipp_comma", commas,
         error=("ImagePositionPatient", "expected 3 finite numbers", "decimal comma"))
    case("palette_without_table",
         _altered(f, "palette_nolut", "examples_palette.dcm",
                  _set(RedPaletteColorLookupTableData=None,
                       RedPaletteColorLookupTableDescriptor=None)),
         error=("PALETTE COLOR", "colour table"))  # fmt: skip
    case("series_ipp_two_values",
         _series(f, "ipp_two", lambda ds, k: setattr(ds, "ImagePositionPatient", [0.0, 5.0 * k])),
         error=("ImagePositionPatient", "expected 3 finite numbers"))  # fmt: skip
    case("series_iop_zero",
         _series(f, "iop_zero", lambda ds, k: setattr(ds, "ImageOrientationPatient", [0.0] * 6)),
         error=("ImageOrientationPatient", "zero direction"))  # fmt: skip
    case("series_iop_not_unit",
         _series(f, "iop_scaled", lambda ds, k: setattr(ds, "ImageOrientationPatient",
                                                        [2.0, 0, 0, 0, 2.0, 0])),
         error=("ImageOrientationPatient", "unit vectors at right angles"))  # fmt: skip
    case("series_iop_skewed",
         _series(f, "iop_skew", lambda ds, k: setattr(ds, "ImageOrientationPatient",
                                                      [1.0, 0, 0, 0.6, 0.8, 0])),
         error=("ImageOrientationPatient", "cosine 0.6"))  # fmt: skip
    case("series_same_position",
         _series(f, "same_pos", lambda ds, k: setattr(ds, "ImagePositionPatient", [0.0, 0, 0])),
         error=("share a position",))  # fmt: skip
    broken = _series(f, "broken_member", n=5)
    member = sorted(broken.iterdir())[2]
    renamed = member.with_name("IM0003")  # slices often have no extension
    renamed.write_bytes(member.read_bytes()[:100])
    member.unlink()
    (broken / "notes.txt").write_text("not a slice, passed over")
    case("series_truncated_member", broken, error=("IM0003", "skip_unreadable=True"))
    case("series_truncated_member_skipped", broken, shape=(1, 128, 128, 4),
         kwargs={"skip_unreadable": True})  # fmt: skip
    case("series_mixed_sizes",
         _series(f, "sizes", lambda ds, k: k == 0 and _shrink(ds)),
         error=("different sizes",))  # fmt: skip
    ct = _pydicom("CT_small.dcm").read_bytes()
    case("truncated_half", _write(f, "half.dcm", ct[: len(ct) // 2]), error=("half.dcm",))
    case("truncated_header", _write(f, "head.dcm", ct[:300]), error=("head.dcm",))
    case("preamble_only", _write(f, "preamble.dcm", ct[:132]), error=("preamble.dcm",))
    case("empty_dcm", _write(f, "empty.dcm", b""), error=("empty.dcm", "not a DICOM file"))
    case("zeros_dcm", _write(f, "zeros.dcm", b"\0" * (8 << 20)),
         error=("zeros.dcm", "all zeros"))  # fmt: skip
    case("random_dcm", _write(f, "random.dcm", np.random.default_rng(0).bytes(4000)),
         error=("random.dcm", "not a DICOM file"))  # fmt: skip
    case("text_dcm", _write(f, "notes.dcm", b"Patient notes, not an image\n" * 20),
         error=("notes.dcm", "not a DICOM file"))  # fmt: skip
    case("no_pixels", _altered(f, "nopix", "CT_small.dcm", _set(PixelData=None)),
         error=("nopix.dcm",))  # fmt: skip
    case("structure_set", _pydicom("rtstruct.dcm"), error=("holds no image",))
    case("report", _pydicom("test-SR.dcm"), error=("holds no image",))

    # -- NIfTI ------------------------------------------------------------------------------
    case("nifti_anatomical", _nibabel("anatomical.nii"),
         shape=(1, 33, 41, 25), spacing=(2.0, 2.0, 2.0))  # fmt: skip
    case("nifti_4d_volume_1", _nibabel("example4d.nii.gz"),
         shape=(1, 128, 96, 24), kwargs={"volume": 1})  # fmt: skip
    case("nifti_4d_without_volume", _nibabel("example4d.nii.gz"),
         error=("holds 2 volumes", "volume=k"))  # fmt: skip
    case("nifti_4d_volume_out_of_range", _nibabel("example4d.nii.gz"),
         error=("out of range",), kwargs={"volume": 5})  # fmt: skip
    case("nifti_2d", _nifti(f, "flat.nii", np.ones((6, 5), np.float32)), shape=(1, 6, 5, 1))
    case("nifti_int16", _nifti(f, "i16.nii.gz", np.arange(60, dtype=np.int16).reshape(3, 4, 5)),
         shape=(1, 3, 4, 5))  # fmt: skip
    case("nifti_float64_ok", _nifti(f, "f64.nii", np.full((3, 4, 5), 1e30)), shape=(1, 3, 4, 5))
    case("nifti_nan", _nifti(f, "nan.nii", np.full((3, 4, 5), np.nan, np.float32)),
         error=("not finite",))  # fmt: skip
    case("nifti_float64_beyond_float32", _nifti(f, "f64big.nii", np.full((3, 4, 5), 1e300)),
         error=("float32's range",))  # fmt: skip
    case("nifti_complex", _nifti(f, "cplx.nii", np.ones((3, 4, 5), np.complex64)),
         error=("complex", "np.abs"))  # fmt: skip
    case("nifti_zero_axis", _nifti(f, "empty_axis.nii", np.ones((3, 0, 5), np.float32)),
         error=("empty",))  # fmt: skip
    case("nifti_5d", _nifti(f, "five.nii", np.ones((2, 2, 2, 1, 3), np.float32)),
         error=("5D NIfTI",))  # fmt: skip
    whole = _nifti(f, "whole.nii", np.ones((20, 20, 20), np.float32)).read_bytes()
    case("nifti_truncated", _write(f, "cut.nii", whole[: len(whole) // 2]),
         error=("cut.nii", "truncated"))  # fmt: skip
    gz = _nifti(f, "whole.nii.gz", np.ones((20, 20, 20), np.float32)).read_bytes()
    case("nifti_gz_cut", _write(f, "cut.nii.gz", gz[: len(gz) // 2]), error=("cut.nii.gz",))
    case("nifti_random", _write(f, "random.nii", np.random.default_rng(1).bytes(1000)),
         error=("random.nii", "not a readable NIfTI"))  # fmt: skip
    case("nifti_claims_8gib", _huge_nifti_header(f), error=("claims_8gib.nii", "truncated"))
    case("nifti_gz_claims_8gib", _huge_nifti_header(f, gz=True),
         error=("claims_8gib.nii.gz", "decompresses to 4448 bytes"))  # fmt: skip

    # -- PNG / JPEG -----------------------------------------------------------------------
    gray = Image.fromarray(np.arange(48 * 32, dtype=np.uint8).reshape(32, 48) % 251)
    case("png_gray", _png(f, "gray.png", gray), shape=(1, 48, 32))
    case("png_rgb", _png(f, "rgb.png", gray.convert("RGB")), shape=(3, 48, 32))
    case("png_rgba", _png(f, "rgba.png", gray.convert("RGBA")), shape=(3, 48, 32))
    case("png_palette", _png(f, "pal.png", gray.convert("P")), shape=(3, 48, 32))
    sixteen = Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16))
    case("png_16bit", _png(f, "sixteen.png", sixteen), shape=(1, 48, 32))
    case("jpeg", _png(f, "photo.jpg", gray.convert("RGB"), quality=90), shape=(3, 48, 32))
    case("png_1x1", _png(f, "dot.png", Image.new("L", (1, 1))), shape=(1, 1, 1))
    good = (f / "gray.png").read_bytes()
    case("png_truncated", _write(f, "cut.png", good[: len(good) // 2]), error=("cut.png",))
    case("png_empty", _write(f, "empty.png", b""), error=("empty.png",))
    case("png_random", _write(f, "random.png", np.random.default_rng(2).bytes(500)),
         error=("random.png", "not a readable PNG"))  # fmt: skip
    case("jpeg_is_text", _write(f, "text.jpg", b"hello"), error=("text.jpg",))
    case("png_100_megapixels", _huge_png(f, 10_000, 10_000), error=("pixels", "max_pixels"))

    # -- file-system objects ----------------------------------------------------------------
    case("missing", f / "absent.dcm", error=("no such file",))
    case("empty_path", "", error=("empty path",))
    fifo = f / "pipe.dcm"
    os.mkfifo(fifo)
    case("fifo", fifo, error=("FIFO",))
    zero = f / "zero.dcm"
    zero.symlink_to("/dev/zero")
    case("link_to_dev_zero", zero, error=("character device",))
    dangling = f / "dangling.dcm"
    dangling.symlink_to(f / "nowhere.dcm")
    case("dangling_link", dangling, error=("no such file",))
    named = f / "folder.dcm"
    named.mkdir()
    case("empty_folder_named_dcm", named, error=("holds no DICOM files",))
    texts = f / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x")
    case("folder_of_text", texts, error=("none of its 1 files is a DICOM image",))
    case("unknown_extension", _write(f, "scan.xyz", b"data"), error=("unknown file type",))
    return cases


def _shrink(ds) -> None:
    ds.Rows, ds.Columns = 64, 64
    ds.PixelData = ds.PixelData[: 64 * 64 * 2]


def run(cases_json: Path, out: Path) -> None:
    """Load every case of ``cases_json`` (name -> path, kwargs) here, each under an alarm of
    ``SECONDS``; write each outcome (shape and spacing, or the exception's type and message)."""
    import logging
    import warnings

    from medvl.scans import ScanError, load_scan

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    def alarm(signum, frame):
        raise TimeoutError(f"still loading after {SECONDS} s")

    signal.signal(signal.SIGALRM, alarm)
    outcomes = {}
    for name, c in json.loads(cases_json.read_text()).items():
        signal.alarm(SECONDS)
        try:
            scan = load_scan(c["path"], **c["kwargs"])
            outcomes[name] = {"shape": list(scan.shape), "spacing": list(scan.meta["spacing"])}
        except ScanError as e:
            outcomes[name] = {"error": "ScanError", "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - recorded: the test says what escaped
            outcomes[name] = {"error": type(e).__name__, "message": str(e)}
        finally:
            signal.alarm(0)
    out.write_text(json.dumps(outcomes, indent=1))


def peak_growth_mb(path: str) -> float:
    """Peak memory growth (MB) of loading ``path`` after the readers are warmed up, in this
    process (run it in a child: ``ru_maxrss`` is the process's peak)."""
    import resource

    from medvl.scans import ScanError, load_scan

    for warm in (_nibabel("anatomical.nii"), _pydicom("CT_small.dcm")):
        load_scan(warm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with contextlib.suppress(ScanError):
        load_scan(path)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


if __name__ == "__main__":
    if sys.argv[1] == "--peak":
        print(peak_growth_mb(sys.argv[2]))
    else:
        run(Path(sys.argv[1]), Path(sys.argv[2]))

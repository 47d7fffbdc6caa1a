"""load_scan on single DICOM files: pydicom's own test files, copies with edited tags, bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from medvl.scans import META_KEYS, ScanError, load_scan


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom")
    return Path(path)


def stored_xy(ds: pydicom.Dataset) -> np.ndarray:
    """Stored pixels of a single-frame grayscale file, indexed [x, y] like load_scan."""
    return ds.pixel_array.T.astype(np.float64)


def test_ct_small_is_2d_in_hounsfield_units():
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = load_scan(path)
    assert scan.dtype == torch.float32 and tuple(scan.shape) == (1, 128, 128)
    # axis 0 = x (columns), axis 1 = y (rows); values rescaled to HU
    expected = stored_xy(ds) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(scan[0].numpy(), expected)
    assert set(scan.meta) <= {*META_KEYS, "affine", "space"}
    assert scan.meta["format"] == "dicom" and scan.meta["modality"] == "CT"
    assert scan.meta["spatial_ndim"] == 2 and scan.meta["orientation"] is None
    assert scan.meta["spacing"] == pytest.approx((0.661468, 0.661468))
    assert scan.meta["study_year"] == 2004 and scan.meta["photometric"] == "MONOCHROME2"
    assert scan.meta["source"] == str(path)


def test_modality_argument_overrides_the_tag():
    assert load_scan(pydicom_file("CT_small.dcm"), modality="mr").meta["modality"] == "MR"
    with pytest.raises(ScanError, match="modality"):
        load_scan(pydicom_file("CT_small.dcm"), modality="  ")


@pytest.mark.parametrize(
    "variant",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_mr_small_encodings_give_the_same_pixels(variant):
    reference = load_scan(pydicom_file("MR_small.dcm"))
    scan = load_scan(pydicom_file(variant))
    assert tuple(scan.shape) == (1, 64, 64)
    torch.testing.assert_close(scan.as_tensor(), reference.as_tensor(), rtol=0, atol=0)
    assert scan.meta["spacing"] == reference.meta["spacing"] == pytest.approx((0.3125, 0.3125))


def test_rtdose_multiframe_is_a_ras_volume_in_gray():
    path = pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    scan = load_scan(path)
    assert tuple(scan.shape) == (1, 10, 10, 15)
    assert scan.meta["spatial_ndim"] == 3 and scan.meta["orientation"] == "RAS"
    assert scan.meta["spacing"] == pytest.approx((10.0, 10.0, 5.0))
    assert scan.meta["modality"] == "RTDOSE"
    affine = scan.affine.numpy()
    assert np.all(np.diag(affine)[:3] > 0)  # RAS: every axis points to +R, +A, +S
    # Every voxel sits where the DICOM geometry puts it: LPS position of frame k, row r,
    # column c is IPP + c*dx*row_dir + r*dy*col_dir + offset_k*normal.
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    ipp, iop = np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient)
    normal = np.cross(iop[:3], iop[3:])
    dy, dx = (float(v) for v in ds.PixelSpacing)
    inv = np.linalg.inv(affine)
    for k, offset in enumerate(ds.GridFrameOffsetVector):
        for r, c in [(0, 0), (3, 7), (9, 2)]:
            lps = ipp + c * dx * iop[:3] + r * dy * iop[3:] + float(offset) * normal
            ras = lps * [-1, -1, 1]
            i, j, z = np.rint(inv[:3, :3] @ ras + inv[:3, 3]).astype(int)
            assert scan[0, i, j, z].item() == pytest.approx(dose[k, r, c], rel=1e-6)


def test_colour_multiframe_keeps_frames_as_stored():
    path = pydicom_file("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    scan = load_scan(path)
    assert tuple(scan.shape) == (3, 320, 240, 30)  # RGB, (x, y, frame)
    frames = ds.pixel_array  # (frames, rows, columns, 3), already RGB
    np.testing.assert_array_equal(scan[:, :, :, 4].numpy(), frames[4].transpose(2, 1, 0))
    assert scan.meta["photometric"] == "YBR_FULL_422" and scan.meta["modality"] == "US"
    assert scan.meta["orientation"] is None  # no patient geometry: the file's axes, not RAS


def _mirror_copy(src: Path, dst: Path) -> None:
    """Write ``src`` as MONOCHROME1 storing the mirrored pixels: it must look identical."""
    ds = pydicom.dcmread(src)
    bits = int(ds.BitsStored)
    lo, hi = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    )
    mirrored = (lo + hi - ds.pixel_array.astype(np.int64)).astype(ds.pixel_array.dtype)
    ds.PixelData = mirrored.tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(dst)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_monochrome1_is_inverted(tmp_path, name):
    _mirror_copy(pydicom_file(name), tmp_path / "mono1.dcm")
    scan = load_scan(tmp_path / "mono1.dcm")
    assert scan.meta["photometric"] == "MONOCHROME1"
    torch.testing.assert_close(scan.as_tensor(), load_scan(pydicom_file(name)).as_tensor())


def test_file_without_extension_is_sniffed(tmp_path):
    shutil.copy(pydicom_file("MR_small.dcm"), tmp_path / "IM00001")
    assert load_scan(tmp_path / "IM00001").meta["format"] == "dicom"


PHI = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "PID7734921",
    "OtherPatientIDs": "OPID55512",
    "PatientBirthDate": "19610203",
    "PatientAddress": "12 Elm Street Springfield",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "1 Hospital Road Shelbyville",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Ratched^Mildred",
    "AccessionNumber": "ACC99887766",
    "StudyID": "STUDY4242",
    "StudyDate": "20040119",
    "SeriesDate": "20040120",
    "AcquisitionDate": "20040121",
    "ContentDate": "20040122",
    "StudyTime": "101112",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.111111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.222222",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.333333",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.444444",
}


def strings_in(value) -> list[str]:
    """Every value in a (nested) meta structure, as text."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *strings_in(v))]
    if isinstance(value, (list, tuple, set)):
        return [s for v in value for s in strings_in(v)]
    return [str(value)]


def assert_no_phi(scan, log_text: str, values: dict[str, str] = PHI) -> None:
    outputs = "\n".join([*strings_in(dict(scan.meta)), repr(scan), str(scan), log_text])
    outputs += "\n" + "\n".join(strings_in(scan.applied_operations))
    leaked = {tag: v for tag, v in values.items() if v in outputs}
    assert not leaked, f"identifiers in load_scan's output: {leaked}"


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm"])
def test_no_patient_identifier_comes_out(tmp_path, caplog, name):
    ds = pydicom.dcmread(pydicom_file(name))
    for tag, value in PHI.items():
        setattr(ds, tag, value)
    ds.save_as(tmp_path / "scan.dcm")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        scan = load_scan(tmp_path / "scan.dcm")
    assert scan.meta["study_year"] == 2004
    assert_no_phi(scan, caplog.text)


def test_invalid_identifier_values_are_not_logged(tmp_path, caplog):
    # pydicom logs the values it finds invalid, verbatim, as it converts them on reading
    bad = {"StudyDate": "2004-01-19", "SeriesInstanceUID": "1.2.3.4.5.6.7.abc"}
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.warns(UserWarning):
        for tag, value in bad.items():
            setattr(ds, tag, value)
    (tmp_path / "series").mkdir()
    ds.save_as(tmp_path / "scan.dcm")
    ds.save_as(tmp_path / "series" / "scan.dcm")
    for path in (tmp_path / "scan.dcm", tmp_path / "series"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            scan = load_scan(path)
        assert scan.meta["study_year"] == 2004
        assert_no_phi(scan, caplog.text, bad)


# -- bad input ------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(ScanError, match="no such file") as err:
        load_scan(tmp_path / "nope.dcm")
    assert "nope.dcm" in str(err.value)


def test_unknown_extension_lists_supported_ones(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"hello")
    with pytest.raises(ScanError, match="scan.xyz") as err:
        load_scan(tmp_path / "scan.xyz")
    for ext in (".dcm", ".nii", ".nii.gz", ".png", ".jpg"):
        assert ext in str(err.value)


def test_truncated_pixel_data():
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(ScanError, match="truncated") as err:
        load_scan(path)
    assert str(path) in str(err.value) and err.value.__cause__ is not None


def test_truncated_header(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:300])
    with pytest.raises(ScanError, match="cut.dcm"):
        load_scan(tmp_path / "cut.dcm")


def test_corrupt_file(tmp_path):
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ScanError, match=r"noise\.dcm: not a DICOM file"):
        load_scan(tmp_path / "noise.dcm")


def test_dicom_without_image():
    with pytest.raises(ScanError, match="holds no image"):
        load_scan(pydicom_file("rtplan.dcm"))


def test_arguments_for_other_formats():
    with pytest.raises(ScanError, match="series_uid"):
        load_scan(pydicom_file("CT_small.dcm"), series_uid="1.2.3")
    with pytest.raises(ScanError, match="volume"):
        load_scan(pydicom_file("CT_small.dcm"), volume=0)

"""load_scan on DICOM series folders written here with pydicom, slice by slice."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medvl.scans import ScanError, load_scan

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
ROWS, COLS = 6, 9
SPACING = (0.5, 0.8)  # (row, column) mm: unequal, to catch swapped axes


@pytest.fixture(scope="module")
def template() -> pydicom.Dataset:
    path = get_testdata_file("MR_small.dcm", download=False)  # int16, explicit VR LE
    if path is None:
        pytest.skip("MR_small.dcm is not in the installed pydicom")
    return pydicom.dcmread(path)


def write_slice(
    folder: Path,
    template: pydicom.Dataset,
    physical: np.ndarray,
    position,
    orientation=AXIAL,
    instance: int = 1,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: float = 1.0,
    intercept: float = 0.0,
    monochrome1: bool = False,
    **tags,
) -> Path:
    """Write one slice whose loaded values must equal ``physical`` (rows, columns)."""
    ds = copy.deepcopy(template)
    stored = np.rint((physical - intercept) / slope).astype(np.int64)
    if monochrome1:  # store mirrored in the int16 range: load_scan must mirror back
        stored = (-(2**15) + 2**15 - 1) - stored
    ds.Rows, ds.Columns = physical.shape
    ds.PixelData = stored.astype(np.int16).tobytes()
    ds.PixelSpacing = list(SPACING)
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.InstanceNumber = instance
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    for tag, value in tags.items():
        setattr(ds, tag, value)
    path = folder / f"{generate_uid()[-12:]}.dcm"  # names in no particular order
    ds.save_as(path)
    return path


def pattern(k: int, shape=(ROWS, COLS)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=float).reshape(shape) + 100.0 * k


def assert_voxels_in_place(scan, slices: list[tuple[pydicom.Dataset | Path, np.ndarray]]):
    """Each pixel of each slice is found at its own world position in the RAS volume."""
    inv = np.linalg.inv(scan.affine.numpy())
    for source, physical in slices:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        for r in range(physical.shape[0]):
            for c in range(physical.shape[1]):
                ras = (ipp + c * dx * iop[:3] + r * dy * iop[3:]) * [-1, -1, 1]
                idx = inv[:3, :3] @ ras + inv[:3, 3]
                np.testing.assert_allclose(idx, np.rint(idx), atol=1e-4)
                i, j, k = np.rint(idx).astype(int)
                assert scan[0, i, j, k].item() == pytest.approx(physical[r, c], abs=1e-3)


@pytest.mark.parametrize(
    "orientation, normal",
    [
        (AXIAL, (0.0, 0.0, 1.0)),
        (SAGITTAL, (-1.0, 0.0, 0.0)),  # all slices share z: z-only spacing would be 0
        ((0.8, 0.6, 0.0, 0.0, 0.0, -1.0), (-0.6, 0.8, 0.0)),  # oblique
    ],
)
def test_slices_are_ordered_by_position_not_instance_number(
    tmp_path, template, orientation, normal
):
    n, gap = 5, 2.5
    instances = [3, 5, 1, 4, 2]  # unrelated to position
    written = []
    for k in range(n):
        position = np.array([10.0, -20.0, 30.0]) + k * gap * np.asarray(normal)
        path = write_slice(tmp_path, template, pattern(k), position, orientation, instances[k])
        written.append((path, pattern(k)))
    scan = load_scan(tmp_path)
    assert scan.meta["format"] == "dicom-series" and scan.meta["orientation"] == "RAS"
    assert scan.meta["spatial_ndim"] == 3 and scan.shape[0] == 1
    assert sorted(scan.meta["spacing"]) == pytest.approx(sorted([*SPACING, gap]))
    assert_voxels_in_place(scan, written)


def test_axial_series_layout(tmp_path, template):
    for k, instance in enumerate([2, 3, 1]):
        write_slice(tmp_path, template, pattern(k), (0, 0, 4.0 * k), AXIAL, instance)
    scan = load_scan(tmp_path)
    assert tuple(scan.shape) == (1, COLS, ROWS, 3)
    assert scan.meta["spacing"] == pytest.approx((0.8, 0.5, 4.0))
    # LPS rows/columns -> RAS: x and y flip; z (superior) keeps slice order by position
    for k in range(3):
        np.testing.assert_array_equal(scan[0, :, :, k].numpy(), pattern(k).T[::-1, ::-1])


def test_rescale_and_monochrome1_per_slice(tmp_path, template):
    settings = [(1.0, 0.0, False), (2.0, -1024.0, False), (0.5, 10.0, True), (1.0, -1024.0, True)]
    written = []
    for k, (slope, intercept, mono1) in enumerate(settings):
        physical = pattern(k) * 2.0 - 700.0  # exactly representable for every slope here
        path = write_slice(
            tmp_path,
            template,
            physical,
            (0, 0, 3.0 * k),
            AXIAL,
            k + 1,
            slope=slope,
            intercept=intercept,
            monochrome1=mono1,
        )
        written.append((path, physical))
    scan = load_scan(tmp_path)
    assert_voxels_in_place(scan, written)


def test_split_multiframe_equals_the_multiframe(tmp_path):
    path = get_testdata_file("rtdose.dcm", download=False)
    if path is None:
        pytest.skip("rtdose.dcm is not in the installed pydicom")
    ds = pydicom.dcmread(path)
    frames, offsets = ds.pixel_array, [float(v) for v in ds.GridFrameOffsetVector]
    normal = np.cross(
        np.asarray(ds.ImageOrientationPatient[:3], float),
        np.asarray(ds.ImageOrientationPatient[3:], float),
    )
    order = np.random.default_rng(0).permutation(len(offsets))
    for k, offset in enumerate(offsets):
        one = copy.deepcopy(ds)
        del one.GridFrameOffsetVector, one.FrameIncrementPointer
        one.NumberOfFrames = 1
        one.ImagePositionPatient = list(
            np.asarray(ds.ImagePositionPatient, float) + offset * normal
        )
        one.PixelData = frames[k].tobytes()
        one.InstanceNumber = int(order[k]) + 1
        one.SOPInstanceUID = generate_uid()
        one.save_as(tmp_path / f"slice{order[k]:02d}.dcm")
    series, whole = load_scan(tmp_path), load_scan(path)
    torch.testing.assert_close(series.as_tensor(), whole.as_tensor())
    torch.testing.assert_close(series.affine, whole.affine)
    assert series.meta["modality"] == "RTDOSE"


def test_no_patient_identifier_from_a_series(tmp_path, template, caplog):
    phi = {
        "PatientName": "Roe^Richard",
        "PatientID": "PID5550199",
        "AccessionNumber": "ACC4711",
        "PatientBirthDate": "19500505",
        "StudyDate": "20210304",
        "InstitutionName": "Example Clinic",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.9",
    }
    for k in range(3):
        write_slice(tmp_path, template, pattern(k), (0, 0, 2.0 * k), series_uid="1.2.3.44", **phi)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        scan = load_scan(tmp_path)
    assert scan.meta["study_year"] == 2021
    text = "\n".join([str(dict(scan.meta)), repr(scan), str(scan), caplog.text])
    assert not [v for v in [*phi.values(), "1.2.3.44"] if v in text]


def test_uneven_spacing_is_logged(tmp_path, template, caplog):
    for k, z in enumerate([0.0, 2.0, 4.0, 7.0]):
        write_slice(tmp_path, template, pattern(k), (0, 0, z), instance=k + 1)
    with caplog.at_level(logging.WARNING):
        scan = load_scan(tmp_path)
    assert "uneven slice spacing" in caplog.text
    assert scan.meta["spacing"][2] == pytest.approx(7.0 / 3)


def test_slices_without_position_fall_back_to_instance_number(tmp_path, template, caplog):
    for k, instance in enumerate([2, 1, 3]):
        path = write_slice(tmp_path, template, pattern(k), (0, 0, k), instance=instance)
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    with caplog.at_level(logging.WARNING):
        scan = load_scan(tmp_path)
    assert "InstanceNumber" in caplog.text
    for z, k in enumerate([1, 0, 2]):  # instance order 1, 2, 3
        np.testing.assert_array_equal(scan[0, :, :, z].numpy(), pattern(k).T)


# -- bad folders ----------------------------------------------------------------------------


def test_mixed_series_are_named_and_one_can_be_picked(tmp_path, template):
    uid_a, uid_b = "1.2.826.0.1.3680043.8.498.100", "1.2.826.0.1.3680043.8.498.200"
    for k in range(3):
        write_slice(
            tmp_path,
            template,
            pattern(k),
            (0, 0, k),
            series_uid=uid_a,
            SeriesDescription="T1 axial",
        )
    for k in range(2):
        write_slice(
            tmp_path,
            template,
            pattern(k, (4, 4)),
            (0, 0, k),
            series_uid=uid_b,
            SeriesDescription="Localizer",
        )
    with pytest.raises(ScanError) as err:
        load_scan(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "series_uid=" in message
    assert f"{uid_a}': 3 slices" in message and "T1 axial" in message
    assert f"{uid_b}': 2 slices" in message and "Localizer" in message
    assert tuple(load_scan(tmp_path, series_uid=uid_b).shape) == (1, 4, 4, 2)
    assert tuple(load_scan(tmp_path, series_uid=uid_a).shape) == (1, COLS, ROWS, 3)
    with pytest.raises(ScanError, match="no series with SeriesInstanceUID '9.9'"):
        load_scan(tmp_path, series_uid="9.9")


def test_slices_of_different_sizes(tmp_path, template):
    for k in range(3):
        write_slice(tmp_path, template, pattern(k), (0, 0, k))
    odd = write_slice(tmp_path, template, pattern(3, (4, 5)), (0, 0, 3))
    with pytest.raises(ScanError, match="different sizes") as err:
        load_scan(tmp_path)
    assert odd.name in str(err.value) and "4x5" in str(err.value) and "6x9" in str(err.value)


def test_duplicate_positions(tmp_path, template):
    for k in range(3):
        write_slice(tmp_path, template, pattern(k), (0, 0, 0 if k < 2 else 5), instance=k + 1)
    with pytest.raises(ScanError, match="share a position"):
        load_scan(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(ScanError, match="holds no DICOM files") as err:
        load_scan(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "study1").mkdir()
    with pytest.raises(ScanError, match="subfolders.*study1"):
        load_scan(tmp_path)


def test_folder_without_dicom_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not a scan")
    with pytest.raises(ScanError, match="none of its 1 files is a DICOM image"):
        load_scan(tmp_path)


def test_stray_files_are_skipped_but_a_corrupt_slice_is_named(tmp_path, template):
    for k in range(2):
        write_slice(tmp_path, template, pattern(k), (0, 0, k))
    (tmp_path / "README.txt").write_text("scanner export")
    assert tuple(load_scan(tmp_path).shape) == (1, COLS, ROWS, 2)
    (tmp_path / "broken.dcm").write_bytes(b"\x00" * 50)
    with pytest.raises(ScanError, match=r"broken\.dcm"):
        load_scan(tmp_path)

"""load_scan on NIfTI: nibabel's and nilearn's shipped files, and files written here."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from medvl.scans import ScanError, example_scan, load_scan


def write_nifti(path, data: np.ndarray, affine: np.ndarray):
    nib.Nifti1Image(data, affine).to_filename(path)
    return path


def assert_same_world(scan, data: np.ndarray, affine: np.ndarray):
    """Every output voxel holds the input value found at the same world position."""
    out = scan[0].numpy()
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in out.shape], indexing="ij"), -1)
    world = idx @ scan.affine.numpy()[:3, :3].T + scan.affine.numpy()[:3, 3]
    inv = np.linalg.inv(affine)
    src = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    np.testing.assert_array_equal(out, data[src[..., 0], src[..., 1], src[..., 2]])


def test_lps_affine_comes_out_ras_with_voxels_flipped(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.array([[-2.0, 0, 0, 10], [0, -3.0, 0, 20], [0, 0, 4.0, -5], [0, 0, 0, 1]])
    scan = load_scan(write_nifti(tmp_path / "lps.nii", data, affine))
    assert nib.aff2axcodes(scan.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(
        scan.affine.numpy(), [[2, 0, 0, 4], [0, 3, 0, 8], [0, 0, 4, -5], [0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(scan[0].numpy(), data[::-1, ::-1, :])
    assert scan.meta["spacing"] == (2.0, 3.0, 4.0) and scan.meta["orientation"] == "RAS"
    assert scan.meta["format"] == "nifti" and scan.meta["modality"] == "OT"
    assert scan.meta["study_year"] is None and scan.meta["photometric"] is None


def test_permuted_axes_come_out_ras(tmp_path):
    data = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    # voxel axis 0 runs inferior, 1 left, 2 anterior: a sagittal-like acquisition
    affine = np.array([[0, -3.0, 0, 1], [0, 0, 2.0, 2], [-4.0, 0, 0, 3], [0, 0, 0, 1]])
    scan = load_scan(write_nifti(tmp_path / "perm.nii.gz", data, affine), modality="MR")
    assert tuple(scan.shape) == (1, 5, 6, 4)
    assert nib.aff2axcodes(scan.affine.numpy()) == ("R", "A", "S")
    assert scan.meta["spacing"] == (3.0, 2.0, 4.0) and scan.meta["modality"] == "MR"
    assert_same_world(scan, data, affine)


def test_anatomical_nii():
    scan = load_scan(example_scan("anatomical"))
    img = nib.load(example_scan("anatomical"))  # LAS
    assert tuple(scan.shape) == (1, 33, 41, 25) and scan.dtype == torch.float32
    np.testing.assert_array_equal(scan[0].numpy(), img.get_fdata()[::-1])
    assert scan.meta["spacing"] == (2.0, 2.0, 2.0)
    assert_same_world(scan, img.get_fdata(), img.affine)


def test_4d_needs_a_volume_and_volume_picks_it():
    path = example_scan("example4d")
    with pytest.raises(ScanError, match=r"4D NIfTI .* holds 2 volumes; pick one with") as err:
        load_scan(path)
    assert str(path) in str(err.value) and "load_scan(path, volume=k), k in 0..1" in str(err.value)
    scan = load_scan(path, volume=1)
    img = nib.load(path)
    expected = nib.as_closest_canonical(img.slicer[..., 1])
    assert tuple(scan.shape) == (1, 128, 96, 24)
    np.testing.assert_array_equal(scan[0].numpy(), expected.get_fdata())
    np.testing.assert_allclose(scan.affine.numpy(), expected.affine, atol=1e-4)
    assert torch.equal(load_scan(path, volume=np.int64(1)), scan)
    for bad in (2, -1):
        with pytest.raises(ScanError, match="out of range, the file holds 2 volumes"):
            load_scan(path, volume=bad)
    with pytest.raises(ScanError, match="volume must be an integer"):
        load_scan(path, volume=1.0)


def test_single_volume_4d_and_2d_files_are_volumes(tmp_path):
    data = np.ones((3, 4, 5, 1), np.float32)
    assert tuple(load_scan(write_nifti(tmp_path / "a.nii", data, np.eye(4))).shape) == (1, 3, 4, 5)
    data2d = np.ones((3, 4), np.float32)
    assert tuple(load_scan(write_nifti(tmp_path / "b.nii", data2d, np.eye(4))).shape) == (
        1,
        3,
        4,
        1,
    )
    assert tuple(load_scan(tmp_path / "a.nii", volume=0).shape) == (1, 3, 4, 5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, bad):
    data = np.zeros((3, 4, 5), np.float32)
    data[1, 2, 3] = bad
    path = write_nifti(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(ScanError, match=r"nan\.nii\.gz: 1 of 60 values are not finite"):
        load_scan(path)


def test_5d_is_refused(tmp_path):
    path = write_nifti(tmp_path / "v.nii", np.zeros((2, 2, 2, 1, 3), np.float32), np.eye(4))
    with pytest.raises(ScanError, match="5D NIfTI"):
        load_scan(path)


def test_truncated_and_corrupt_files(tmp_path):
    path = write_nifti(tmp_path / "whole.nii.gz", np.ones((20, 20, 20), np.float32), np.eye(4))
    raw = gzip.decompress(path.read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ScanError, match=r"cut\.nii\.gz: .*decompresses to \d+ bytes: truncated"):
        load_scan(tmp_path / "cut.nii.gz")  # the header's size checked before reading
    (tmp_path / "noise.nii").write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(ScanError, match=r"noise\.nii: not a readable NIfTI"):
        load_scan(tmp_path / "noise.nii")


def test_mni152_template():
    try:
        path = example_scan("mni152")
    except ScanError as e:
        pytest.skip(str(e))
    scan = load_scan(path)
    assert tuple(scan.shape) == (1, 197, 233, 189)
    assert scan.meta["orientation"] == "RAS" and scan.meta["spacing"] == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(scan.affine.numpy()[:3, 3], [-98, -134, -72])
    assert float(scan.max()) > 0

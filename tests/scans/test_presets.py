"""Modality presets on real files: pydicom's CT, DICOM radiographs, NIfTI volumes, fundus PNGs."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import ScaleIntensityRangePercentiles
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medvl.scans import META_KEYS, ScanError, example_scan, load_scan
from medvl.scans.presets import (
    CT_WINDOWS,
    PRESETS,
    Window,
    as_dict_transform,
    brain_mri,
    chest_xray,
    ct,
    fundus,
    get_preset,
    knee_mri,
    parse_windows,
)

_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def example(name: str) -> Path:
    try:
        return example_scan(name)
    except ScanError as e:
        pytest.skip(str(e))


def assert_meta_consistent(image: MetaTensor) -> None:
    """Only load_scan's keys, and ``meta["spacing"]`` is the affine's spacing."""
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32
    assert set(image.meta) <= {*META_KEYS, "affine", "space"}
    spacing = affine_to_spacing(image.affine, r=image.ndim - 1)
    assert image.meta["spacing"] == pytest.approx(tuple(spacing.tolist()), abs=1e-9)


def world_box(image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of the first and last voxel centres (diagonal affines)."""
    affine = image.affine.numpy()
    nd = image.ndim - 1
    last = np.array([*(s - 1 for s in image.shape[1:]), *[0] * (3 - nd), 1.0])
    first = np.array([0.0, 0.0, 0.0, 1.0])
    a, b = (affine @ first)[:nd], (affine @ last)[:nd]
    return np.minimum(a, b), np.maximum(a, b)


def edge_box(image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of a 2D image's outer pixel edges."""
    affine = image.affine.numpy()
    w, h = image.shape[1:]
    a = affine @ np.array([-0.5, -0.5, 0.0, 1.0])
    b = affine @ np.array([w - 0.5, h - 0.5, 0.0, 1.0])
    return a[:2], b[:2]


# -- CT windows -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_small() -> MetaTensor:
    return load_scan(example("ct_small"))


@pytest.mark.parametrize("name", ["soft_tissue", "lung", "bone", "brain", "mediastinum"])
def test_ct_window_maps_hounsfield_units_exactly(ct_small, name):
    w = CT_WINDOWS[name]
    out = ct(window=name)(ct_small)
    hu = ct_small.as_tensor().double()
    expected = ((hu - w.low) / (w.high - w.low)).clamp(0, 1)
    torch.testing.assert_close(out.as_tensor().double(), expected, atol=1e-6, rtol=0)
    assert tuple(out.shape) == (1, 128, 128) and out.meta["modality"] == "CT"
    assert_meta_consistent(out)
    # the window's edges, centre and beyond, on exact HU values
    values = torch.tensor([w.low, w.center, w.high, w.low - 500, w.high + 500])
    probe = ct(window=name)(MetaTensor(values[None, :, None]))
    torch.testing.assert_close(probe[0, :, 0], torch.tensor([0.0, 0.5, 1.0, 0.0, 1.0]))


def test_named_ct_windows_are_the_standard_ones():
    assert CT_WINDOWS["soft_tissue"] == Window(center=50, width=400)
    assert CT_WINDOWS["lung"] == Window(center=-600, width=1500)
    assert CT_WINDOWS["bone"] == Window(center=400, width=1800)
    assert CT_WINDOWS["soft_tissue"].bounds == (-150, 250)
    assert CT_WINDOWS["lung"].bounds == (-1350, 150)
    assert CT_WINDOWS["bone"].bounds == (-500, 1300)


def test_multi_window_stacks_channels(ct_small):
    names = ("soft_tissue", "lung", "bone")
    out = ct(window=names)(ct_small)
    assert tuple(out.shape) == (3, 128, 128)
    for k, name in enumerate(names):
        torch.testing.assert_close(
            out[k : k + 1].as_tensor(), ct(window=name)(ct_small).as_tensor()
        )
    assert_meta_consistent(out)
    assert out.meta["source"] == ct_small.meta["source"]


def test_window_forms_are_equivalent(ct_small):
    reference = ct(window="lung")(ct_small).as_tensor()
    for spec in [(-600, 1500), Window(-600.0, 1500.0), {"level": -600, "width": 1500}]:
        torch.testing.assert_close(ct(window=spec)(ct_small).as_tensor(), reference)
    assert parse_windows([(-600, 1500), "bone"]) == [CT_WINDOWS["lung"], CT_WINDOWS["bone"]]
    for bad in ["liver", (50, 0), (50, -10), {"width": 400}, [], (1, 2, 3), (float("nan"), 1)]:
        with pytest.raises(ValueError):
            ct(window=bad)


def test_ct_resampling_updates_spacing(ct_small):
    out = ct(spacing=1.0)(ct_small)
    assert out.meta["spacing"] == pytest.approx((1.0, 1.0))
    assert tuple(out.shape) == (1, 85, 85)  # 128 x 0.66 mm
    assert_meta_consistent(out)
    assert ct_small.meta["spacing"] == pytest.approx((0.661468, 0.661468))  # input untouched


# -- the DICOM VOI window in load_scan's meta -----------------------------------------------


def write_xray(
    path: Path,
    stored_xy: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """A 12-bit DX DICOM of ``stored_xy`` (indexed [x, y], like load_scan's output)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = _DX_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = _DX_STORAGE
    ds.Modality = "DX"
    ds.Columns, ds.Rows = stored_xy.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = ["0.2", "0.2"]
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    ds.PixelData = np.ascontiguousarray(stored_xy.T.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def radiograph(width: int = 360, height: int = 240) -> np.ndarray:
    """Stored 12-bit values, [x, y]: a ramp with two dark 'lungs' and noise."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(width), np.arange(height), indexing="ij")
    values = 400 + 3000 * x / width + 500 * y / height
    for cx in (0.3 * width, 0.7 * width):
        values -= 900 * (
            ((x - cx) / (0.15 * width)) ** 2 + ((y - height / 2) / (0.35 * height)) ** 2 < 1
        )
    return np.clip(values + rng.normal(0, 20, values.shape), 0, 4095).round().astype(np.uint16)


def test_window_meta_key(tmp_path):
    assert load_scan(example("mr_small")).meta["window"] == (600.0, 1600.0)
    assert load_scan(example("ct_small")).meta["window"] is None
    assert load_scan(example("anatomical")).meta["window"] is None
    stored = radiograph(40, 30)
    Image.fromarray((stored.T // 16).astype(np.uint8)).save(tmp_path / "cxr.png")
    assert load_scan(tmp_path / "cxr.png").meta["window"] is None
    # the window is in the rescaled units load_scan returns
    path = write_xray(tmp_path / "r.dcm", stored, window=(900, 1000), slope=2, intercept=-1000)
    scan = load_scan(path)
    assert scan.meta["window"] == (900.0, 1000.0)
    torch.testing.assert_close(scan[0].double(), torch.from_numpy(stored * 2.0 - 1000))
    assert load_scan(write_xray(tmp_path / "none.dcm", stored)).meta["window"] is None
    bad = write_xray(tmp_path / "bad.dcm", stored, window=(900, 0))  # width must be > 0
    assert load_scan(bad).meta["window"] is None


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, 0.0), (2.0, -1000.0)])
def test_monochrome1_window_follows_the_mirrored_pixels(tmp_path, slope, intercept):
    stored = radiograph()
    center, width = 2000.0 * slope + intercept, 1500.0 * slope
    mono2 = write_xray(
        tmp_path / "m2.dcm", stored, window=(center, width), slope=slope, intercept=intercept
    )
    # The same radiograph as a MONOCHROME1 file: stored values mirrored in the 12-bit range,
    # the window centre with them (in the file's rescaled units), the width unchanged.
    mono1 = write_xray(
        tmp_path / "m1.dcm",
        4095 - stored,
        photometric="MONOCHROME1",
        window=(4095 * slope + 2 * intercept - center, width),
        slope=slope,
        intercept=intercept,
    )
    a, b = load_scan(mono2), load_scan(mono1)
    assert b.meta["photometric"] == "MONOCHROME1"
    torch.testing.assert_close(b.as_tensor(), a.as_tensor())  # the loader inverted it
    assert a.meta["window"] == pytest.approx((center, width))
    assert b.meta["window"] == pytest.approx((center, width))
    preset = chest_xray(size=180)
    torch.testing.assert_close(preset(b).as_tensor(), preset(a).as_tensor())
    # bright = dense: the window maps the ramp's high (right) end towards white
    out = preset(b)
    assert out[0, -10:].mean() > out[0, :10].mean()


def test_chest_xray_uses_the_voi_window(tmp_path):
    stored = radiograph()  # 360 wide, 240 high
    center, width = 2000.0, 1500.0
    scan = load_scan(write_xray(tmp_path / "cxr.dcm", stored, window=(center, width)))
    # size = the longest side: no resize, so each pixel shows the window exactly
    same = chest_xray(size=360)(scan)
    expected = ((torch.from_numpy(stored).double() - (center - width / 2)) / width).clamp(0, 1)
    torch.testing.assert_close(same[0].double(), expected, atol=1e-6, rtol=0)
    assert float(same.min()) == 0 and float(same.max()) == 1  # the window clips both ends
    percentiles = chest_xray(size=360, use_dicom_window=False)(scan)
    assert not torch.allclose(percentiles.as_tensor(), same.as_tensor(), atol=0.05)


def test_chest_xray_keeps_the_aspect(tmp_path):
    scan = load_scan(write_xray(tmp_path / "cxr.dcm", radiograph(), window=(2000, 1500)))
    out = chest_xray(size=120)(scan)
    assert tuple(out.shape) == (1, 120, 80)  # 360 x 240 -> longest side 120, 3:2 kept
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert out.meta["spacing"] == pytest.approx((0.6, 0.6))  # 0.2 mm x 3
    assert_meta_consistent(out)
    square = chest_xray(size=120, pad_to_square=True)(scan)
    assert tuple(square.shape) == (1, 120, 120)
    torch.testing.assert_close(square[:, :, 20:100].as_tensor(), out.as_tensor())
    assert float(square[:, :, :20].abs().max()) == 0  # black bands, centred
    assert square.meta["spacing"] == pytest.approx((0.6, 0.6))


def test_chest_xray_without_window_uses_percentiles(tmp_path):
    scan = load_scan(write_xray(tmp_path / "cxr.dcm", radiograph()))
    assert scan.meta["window"] is None
    out = chest_xray(size=360)(scan)
    expected = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(scan.as_tensor())
    torch.testing.assert_close(out.as_tensor(), expected)


def test_chest_phantom_dicom(tmp_path):
    from medvl.scans.phantoms import make_chest_case, write_case

    scan = load_scan(write_case(make_chest_case(1), tmp_path)["image"])
    assert scan.meta["window"] is not None
    out = chest_xray()(scan)
    assert max(out.shape[1:]) == 512 and float(out.min()) >= 0 and float(out.max()) <= 1
    assert_meta_consistent(out)


# -- fundus -----------------------------------------------------------------------------------


def disc_photo(path: Path, width=300, height=260, center=(140, 125), radius=100) -> Path:
    """An RGB disc on black with sensor noise and a white text label in a corner."""
    rng = np.random.default_rng(1)
    x, y = np.meshgrid(np.arange(width), np.arange(height), indexing="ij")
    inside = (x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius**2
    rgb = np.zeros((3, width, height))
    for c, level in enumerate((200, 90, 40)):
        rgb[c] = inside * level * (0.7 + 0.3 * rng.random((width, height)))
    rgb += rng.uniform(0, 6, rgb.shape)  # the "black" border is not quite black
    rgb[:, 4:30, 6:14] = 255  # burnt-in text
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8).transpose(2, 1, 0)).save(path)
    return path


def test_fundus_crop_is_tight_on_a_known_disc(tmp_path):
    scan = load_scan(disc_photo(tmp_path / "eye.png"))
    assert tuple(scan.shape) == (3, 300, 260)
    out = fundus(size=128, pad_to_square=False)(scan)
    lo, hi = edge_box(out)  # the output's edges, in input pixels
    np.testing.assert_allclose(lo, [140 - 100.5, 125 - 100.5], atol=2)
    np.testing.assert_allclose(hi, [140 + 100.5, 125 + 100.5], atol=2)
    assert tuple(out.shape) == (3, 128, 128)


def test_fundus_output_is_square_rgb_in_unit_range(tmp_path):
    scan = load_scan(
        disc_photo(tmp_path / "eye.png", width=320, height=220, center=(160, 110), radius=130)
    )  # a disc clipped at the top and bottom
    out = fundus(size=96)(scan)
    assert tuple(out.shape) == (3, 96, 96)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(out[:, :3, :3].max()) == 0 and float(out[:, -3:, -3:].max()) == 0  # corners
    assert float(out[0, 40:56, 40:56].mean()) > 0.5  # the disc's red centre
    assert_meta_consistent(out)


def test_fundus_on_a_real_photograph():
    scan = load_scan(example("retina"))
    red = scan[0].numpy() > 0.04 * 255
    xs, ys = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    out = fundus()(scan)
    assert tuple(out.shape) == (3, 512, 512)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    lo, hi = edge_box(fundus(pad_to_square=False)(scan))
    np.testing.assert_allclose(lo, [xs[0] - 0.5, ys[0] - 0.5], atol=3)
    np.testing.assert_allclose(hi, [xs[-1] + 0.5, ys[-1] + 0.5], atol=3)
    assert float(out[:, :8, :8].max()) == 0


def test_fundus_phantom_png(tmp_path):
    from medvl.scans.phantoms import make_fundus_case, write_case

    out = fundus(size=256)(load_scan(write_case(make_fundus_case(2), tmp_path)["image"]))
    assert tuple(out.shape) == (3, 256, 256) and float(out.max()) <= 1
    assert_meta_consistent(out)


# -- knee and brain MRI -----------------------------------------------------------------------


def write_volume(path: Path, spacing, shape=(100, 100, 12), box=((20, 80), (30, 70), (3, 9))):
    """An ellipsoid filling ``box`` (voxel index ranges, inclusive) in an empty, noisy volume."""
    rng = np.random.default_rng(2)
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r2 = sum(((g - (a + b) / 2) / ((b - a) / 2)) ** 2 for g, (a, b) in zip(grid, box, strict=True))
    volume = np.where(r2 <= 1, 300 + 700 * grid[0] / shape[0], 0.0)
    volume += rng.uniform(0, 5, shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 20.0, -30.0]
    nib.Nifti1Image(volume.astype(np.float32), affine).to_filename(path)
    inside = np.argwhere(r2 <= 1)
    corners = np.c_[inside.min(0), inside.max(0)].T  # the object's voxel bounding box
    return path, (corners * spacing + affine[:3, 3])  # ...in world mm


@pytest.mark.parametrize(
    ("preset", "spacing", "expected"),
    [
        # axial stack 0.4 x 0.4 x 3 mm; the thick axis is kept by default
        (
            knee_mri(target_spacing=(0.5, 0.5, 1.0), anisotropy_threshold=None),
            (0.4, 0.4, 3.0),
            (0.5, 0.5, 1.0),
        ),
        (knee_mri(), (0.4, 0.4, 3.0), (0.5, 0.5, 3.0)),
        (knee_mri(), (3.0, 0.4, 0.4), (3.0, 0.5, 0.5)),  # a sagittal stack: thick along x
        (brain_mri(), (0.4, 0.4, 3.0), (1.0, 1.0, 1.0)),
    ],
)
def test_mri_presets_resample_scale_and_crop(tmp_path, preset, spacing, expected):
    shape = tuple(40 if s == 3.0 else 100 for s in spacing)
    box = tuple((8, 30) if s == 3.0 else (20, 80) for s in spacing)
    path, (obj_lo, obj_hi) = write_volume(tmp_path / "knee.nii.gz", spacing, shape, box)
    scan = load_scan(path)
    out = preset(scan)
    assert out.meta["spacing"] == pytest.approx(expected)
    assert tuple(affine_to_spacing(out.affine, r=3).tolist()) == pytest.approx(expected)
    assert_meta_consistent(out)
    assert out.meta["orientation"] == "RAS" and out.shape[0] == 1
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and float(out.max()) > 0.9
    # The crop keeps the whole object and removes the empty border around it.
    lo, hi = world_box(out)
    in_lo, in_hi = world_box(scan)
    # partial volume (one native voxel) + the margin (<= 4 voxels) + rounding of the grid
    slack = np.asarray(spacing) + 6 * np.asarray(expected)
    assert np.all(lo <= obj_lo + 1e-6) and np.all(hi >= obj_hi - 1e-6)
    assert np.all(lo >= obj_lo - slack) and np.all(hi <= obj_hi + slack)
    assert np.all(hi - lo < in_hi - in_lo)


def test_brain_mri_on_mni152():
    scan = load_scan(example("mni152"))
    out = brain_mri()(scan)
    assert out.meta["spacing"] == pytest.approx((1.0, 1.0, 1.0))
    assert_meta_consistent(out)
    assert float(out.min()) == 0 and float(out.max()) == 1
    # background cropped along every axis
    assert all(o < i for o, i in zip(out.shape[1:], scan.shape[1:], strict=True))
    # the crop lost no foreground: the grid is already 1 mm, so voxels compare one to one
    scaled = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(scan.as_tensor())
    assert int((out > 0.1).sum()) == int((scaled > 0.1).sum())


@pytest.mark.parametrize(("preset", "margin"), [(knee_mri(), 4), (brain_mri(), 2)])
def test_mri_presets_on_a_2d_slice_scale_and_crop_only(tmp_path, preset, margin):
    image = np.zeros((80, 60), np.uint8)  # (H, W) for PIL: 60 wide, 80 high
    image[20:50, 10:40] = np.linspace(50, 250, 30)[:, None]
    Image.fromarray(image).save(tmp_path / "slice.png")
    out = preset(load_scan(tmp_path / "slice.png"))
    assert tuple(out.shape) == (1, 30 + 2 * margin, 30 + 2 * margin)  # not resampled
    assert out.meta["spacing"] == (1.0, 1.0) and float(out.max()) == 1
    assert_meta_consistent(out)


def test_knee_phantom_nifti(tmp_path):
    from medvl.scans.phantoms import make_knee_case, write_case

    scan = load_scan(write_case(make_knee_case(0), tmp_path)["image"])
    out = knee_mri()(scan)
    assert out.meta["spacing"] == pytest.approx((0.5, 0.5, 0.5))  # 1.5 x 0.75 x 0.75: ratio 2
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert_meta_consistent(out)


# -- configuration, dictionaries, pickling, identifiers --------------------------------------


def test_get_preset_and_overrides():
    assert set(PRESETS) == {"knee_mri", "brain_mri", "ct", "chest_xray", "fundus"}
    for name in PRESETS:
        get_preset(name)
    scan = MetaTensor(torch.rand(1, 60, 30) * 1000)
    assert tuple(get_preset("chest_xray", size=40)(scan).shape) == (1, 40, 20)
    with pytest.raises(ValueError, match="unknown preset 'knee'.*knee_mri"):
        get_preset("knee")
    with pytest.raises(ValueError, match="fundus"):
        get_preset("fundus", colour=True)
    for bad in [{"size": 0}, {"size": 1.5}, {"percentiles": (99, 1)}]:
        with pytest.raises(ValueError):
            get_preset("chest_xray", **bad)
    with pytest.raises(ValueError):
        knee_mri(target_spacing=-1)


def test_dict_transform_and_pickling(ct_small):
    preset = ct(window=("soft_tissue", "bone"))
    transform = as_dict_transform(preset, keys=("image",))
    data = {"image": ct_small, "question": "Is there a nodule?"}
    out = pickle.loads(pickle.dumps(transform))(data)
    assert out["question"] == data["question"] and tuple(out["image"].shape) == (2, 128, 128)
    torch.testing.assert_close(out["image"].as_tensor(), preset(ct_small).as_tensor())
    for name in PRESETS:
        pickle.loads(pickle.dumps(get_preset(name)))
    assert as_dict_transform(preset, keys="mask", allow_missing_keys=True)(data) == data


def test_no_identifier_reaches_a_preset_output(tmp_path):
    ds = pydicom.dcmread(example("mr_small"))
    phi = {"PatientName": "Doe^Jane", "PatientID": "PID7734921", "AccessionNumber": "ACC998877"}
    for tag, value in phi.items():
        setattr(ds, tag, value)
    ds.save_as(tmp_path / "mr.dcm")
    out = chest_xray(size=32)(load_scan(tmp_path / "mr.dcm"))
    text = "\n".join([repr(dict(out.meta)), repr(out), repr(out.applied_operations)])
    assert not [v for v in phi.values() if v in text]


def test_the_spent_window_is_cleared(tmp_path):
    scan = load_scan(write_xray(tmp_path / "cxr.dcm", radiograph(), window=(2000, 1500)))
    once = chest_xray(size=360)(scan)
    assert scan.meta["window"] == (2000.0, 1500.0) and once.meta["window"] is None
    twice = chest_xray(size=360)(once)  # percentiles of [0, 1] values, not the HU window
    assert float(twice.max()) == 1 and float(twice.mean()) > 0.2

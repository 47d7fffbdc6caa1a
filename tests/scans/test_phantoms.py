"""Phantoms: determinism, exact boxes, grades, image content, and files read back by load_scan."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

import medvl.scans.phantoms
from medvl.scans import load_scan
from medvl.scans.phantoms import (
    MAKERS,
    case_seed,
    generate_phantoms,
    make_chest_case,
    make_fundus_case,
    make_knee_case,
    write_case,
)
from medvl.scans.phantoms.knee import TISSUES as KNEE_TISSUES
from medvl.scans.phantoms.writers import centred_affine

SEEDS = range(12)


@pytest.fixture(scope="module")
def cases() -> dict[str, list]:
    return {kind: [make(s) for s in SEEDS] for kind, make in MAKERS.items()}


@pytest.fixture(scope="module")
def written(tmp_path_factory, cases) -> dict[str, object]:
    """One case of each kind with findings, written to disk."""
    out = tmp_path_factory.mktemp("phantoms")
    picked = {}
    for kind, group in cases.items():
        case = max(group, key=lambda c: sum(f.present for f in c.findings))
        write_case(case, out)
        picked[kind] = case
    return picked


def _bbox(mask: np.ndarray) -> tuple[float, ...]:
    """Reference bounding box, computed independently of medvl's mask_box."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    n = np.array(mask.shape)
    return tuple((lo / n).tolist() + (hi / n).tolist())


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_dilation(mask)


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MAKERS))
def test_same_seed_same_case_other_seed_other_case(kind, cases):
    again = MAKERS[kind](SEEDS[3])
    first = cases[kind][3]
    assert np.array_equal(again.image, first.image)
    assert np.array_equal(again.mask, first.mask)
    assert again.findings == first.findings and again.grade == first.grade
    assert not np.array_equal(cases[kind][4].image, first.image)
    assert again.case_id == f"{kind}-000003"


def test_written_files_are_byte_identical(tmp_path):
    for make in (make_knee_case, make_fundus_case, make_chest_case):
        a = write_case(make(5), tmp_path / "a")
        b = write_case(make(5), tmp_path / "b")
        for key in a:
            files_a = sorted(a[key].rglob("*")) if a[key].is_dir() else [a[key]]
            files_b = sorted(b[key].rglob("*")) if b[key].is_dir() else [b[key]]
            assert [f.name for f in files_a] == [f.name for f in files_b]
            for fa, fb in zip(files_a, files_b, strict=True):
                assert fa.read_bytes() == fb.read_bytes(), fa


def test_set_seeds_do_not_overlap(tmp_path):
    assert case_seed(0, 5) != case_seed(1, 5)
    cases = generate_phantoms(tmp_path, 2, seed=1, modalities=("fundus", "chest"))
    assert [c.case_id for c in cases] == [
        "fundus-100000", "chest-100000", "fundus-100001", "chest-100001",
    ]  # fmt: skip
    assert all((tmp_path / c.case_id / "truth.json").is_file() for c in cases)
    with pytest.raises(ValueError, match="unknown phantom kind"):
        generate_phantoms(tmp_path, 1, modalities=("brain",))


# --- ground truth -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MAKERS))
def test_boxes_are_exact_mask_bounding_boxes(kind, cases):
    for case in cases[kind]:
        assert case.mask.shape == case.image.shape[1:]
        assert set(np.unique(case.mask)) <= {0} | {f.mask_label for f in case.findings}
        for f in case.findings:
            voxels = case.mask == f.mask_label
            assert (f.severity == 0) == (not voxels.any()), (case.case_id, f.name)
            assert f.box == (_bbox(voxels) if voxels.any() else None), (case.case_id, f.name)
            assert 0 <= f.severity <= 3
        for name, box in case.structures.items():
            assert box is not None and len(box) == 2 * case.mask.ndim, name


@pytest.mark.parametrize("kind", list(MAKERS))
def test_every_finding_is_sometimes_absent_and_sometimes_present(kind, cases):
    seen = {}
    for case in cases[kind]:
        for f in case.findings:
            seen.setdefault(f.name, set()).add(f.present)
    assert all(v == {True, False} for v in seen.values()), seen


def test_fundus_grade_follows_the_lesions(cases):
    for c in cases["fundus"]:
        sev = {f.name: f.severity for f in c.findings}
        dr = sev["microaneurysms"] or sev["haemorrhages"] or sev["hard_exudates"]
        if c.grade == 0:
            assert not dr and not sev["neovascularisation"]
        elif c.grade == 1:
            assert sev["microaneurysms"] and not sev["haemorrhages"] and not sev["hard_exudates"]
        elif c.grade == 2:
            assert sev["haemorrhages"] < 3 and (sev["haemorrhages"] or sev["hard_exudates"])
        elif c.grade == 3:
            assert sev["haemorrhages"] == 3 and not sev["neovascularisation"]
        else:
            assert c.grade == 4 and sev["neovascularisation"]
        assert (c.grade == 4) == bool(sev["neovascularisation"])


def test_chest_cardiomegaly_matches_the_measured_ratio(cases):
    for c in cases["chest"]:
        ctr = c.measurements["cardiothoracic_ratio"]
        assert c.finding("cardiomegaly").present == (ctr > 0.5), (c.case_id, ctr)
        heart = c.anatomy_mask == 4
        assert c.structures["heart"] == _bbox(heart)


# --- a model has to look at the image ---------------------------------------------------------


def test_knee_lesions_differ_from_their_surrounding_tissue(cases):
    around = {
        "bone_marrow_lesion": ("femur", "tibia"), "cartilage_defect": ("cartilage",),
        "meniscal_tear": ("meniscus",), "effusion": ("muscle", "fat"),
    }  # fmt: skip
    checked = set()
    for c in cases["knee"]:
        image = c.image[0]
        for f in c.present:
            lesion = c.mask == f.mask_label
            tissue = np.isin(c.anatomy_mask, [KNEE_TISSUES[t] for t in around[f.name]])
            ring = _ring(lesion, 3) & tissue & (c.mask == 0)
            assert image[lesion].mean() - image[ring].mean() > 150, (c.case_id, f.name)
            checked.add(f.name)
    assert checked == set(around)


def test_fundus_lesions_differ_from_the_retina_around_them(cases):
    dark = {"haemorrhages", "microaneurysms", "neovascularisation"}
    checked = set()
    for c in cases["fundus"]:
        green = c.image[1].astype(float)  # red-free view: where DR lesions show best
        for f in c.present:
            lesion = c.mask == f.mask_label
            ring = _ring(lesion, 3) & (c.mask == 0)
            diff = green[lesion].mean() - green[ring].mean()
            assert (diff < -15) if f.name in dark else (diff > 30), (c.case_id, f.name, diff)
            checked.add(f.name)
    assert checked == {f.name for f in cases["fundus"][0].findings}


def test_chest_findings_differ_from_the_lung_around_them(cases):
    sign = {"nodule": 1, "pleural_effusion": 1, "pneumothorax": -1}
    checked = set()
    for c in cases["chest"]:
        image = c.image[0].astype(float)
        lungs = np.isin(c.anatomy_mask, (2, 3))
        for f in c.present:
            if f.name in sign:
                lesion = c.mask == f.mask_label
                ring = _ring(lesion, 4) & lungs & (c.mask == 0)
                diff = image[lesion].mean() - image[ring].mean()
                assert sign[f.name] * diff > 150, (c.case_id, f.name, diff)
                checked.add(f.name)
    assert checked == set(sign)


# --- files read back through load_scan --------------------------------------------------------


def _loaded_box(scan, label: int) -> tuple[float, ...]:
    return _bbox(np.asarray(scan[0]) == label)


def test_knee_nifti_round_trip(written):
    case = written["knee"]
    scan = load_scan(case.paths["nifti"])
    assert tuple(scan.shape) == case.image.shape
    assert scan.meta["spacing"] == pytest.approx(case.spacing)
    assert scan.meta["orientation"] == "RAS"
    np.testing.assert_array_equal(np.asarray(scan), case.image)
    np.testing.assert_allclose(np.asarray(scan.affine), centred_affine(case.mask.shape,
                                                                       case.spacing))  # fmt: skip
    label = load_scan(case.paths["label"])
    np.testing.assert_array_equal(np.asarray(label[0]), case.mask)
    for f in case.present:
        assert _loaded_box(label, f.mask_label) == f.box


def test_knee_dicom_series_matches_the_nifti(written):
    case = written["knee"]
    nifti = load_scan(case.paths["nifti"])
    series = load_scan(case.paths["dicom"])
    assert series.meta["format"] == "dicom-series" and series.meta["modality"] == "MR"
    assert tuple(series.shape) == tuple(nifti.shape)
    assert series.meta["spacing"] == pytest.approx(case.spacing)
    np.testing.assert_allclose(np.asarray(series.affine), np.asarray(nifti.affine), atol=1e-4)
    first = pydicom.dcmread(sorted(case.paths["dicom"].iterdir())[0])
    slope = float(first.RescaleSlope)
    diff = np.abs(np.asarray(series) - np.asarray(nifti))
    assert diff.max() <= slope / 2 + 1e-3  # only the 12-bit quantisation differs
    # The boxes still point at the lesions: their voxels are as bright in the series.
    for f in case.present:
        lesion = case.mask == f.mask_label
        assert np.asarray(series[0])[lesion].mean() == pytest.approx(case.image[0][lesion].mean(),
                                                                     abs=slope)  # fmt: skip
    assert first.Modality == "MR" and first.ImageOrientationPatient == [0, 1, 0, 0, 0, -1]
    assert float(first.SliceThickness) == case.spacing[0]
    assert first.PatientName == "PHANTOM^KNEE" and "PatientBirthDate" not in first
    uid = pydicom.uid.generate_uid(entropy_srcs=["medvl-phantom", "knee", str(case.seed),
                                                 "series"])  # fmt: skip
    assert first.SeriesInstanceUID == uid


def test_fundus_png_round_trip(written):
    case = written["fundus"]
    scan = load_scan(case.paths["png"])
    assert tuple(scan.shape) == (3, 256, 256)
    np.testing.assert_array_equal(np.asarray(scan), case.image)
    label = load_scan(case.paths["label"])
    for f in case.present:
        assert _loaded_box(label, f.mask_label) == f.box


def test_chest_dicom_and_png_round_trip(written):
    case = written["chest"]
    scan = load_scan(case.paths["dicom"])
    assert scan.meta["modality"] == "DX" and scan.meta["photometric"] == "MONOCHROME2"
    assert scan.meta["spacing"] == pytest.approx(case.spacing)
    np.testing.assert_array_equal(np.asarray(scan), case.image)
    ds = pydicom.dcmread(case.paths["dicom"])
    assert ds.WindowWidth > 0 and 0 < ds.WindowCenter < 4096
    png = load_scan(case.paths["png"])
    np.testing.assert_allclose(np.asarray(png), case.image * (255 / 4095), atol=0.51)
    label = load_scan(case.paths["label"])
    for f in case.present:
        assert _loaded_box(label, f.mask_label) == f.box


def test_phantoms_do_not_import_higher_layers():
    """Layering: medvl.scans <- medvl.data <- ...; a phantom module imports only scans."""
    folder = Path(medvl.scans.phantoms.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith("medvl.") or name.startswith("medvl.scans"), path


def test_chest_difficulty_levels_keep_the_truth_and_make_findings_conspicuous():
    from medvl.scans.phantoms.chest import make_chest_case

    seed = next(s for s in range(100) if make_chest_case(s).finding("nodule").present)
    real, easy = make_chest_case(seed), make_chest_case(seed, "easiest")
    assert [(f.name, f.severity, f.location) for f in real.findings] == [
        (f.name, f.severity, f.location) for f in easy.findings
    ]
    label = real.finding("nodule").mask_label
    assert (easy.mask == label).sum() > 4 * (real.mask == label).sum()  # radius x3
    image = easy.image[0]
    for f in easy.present:
        painted = image[easy.mask == f.mask_label]
        assert (painted == (0 if f.name == "pneumothorax" else 4095)).all(), f.name
    background = (easy.mask == 0) & (easy.anatomy_mask > 0)
    assert image[background].max() <= 0.3 * 4095 + 1
    with pytest.raises(ValueError, match="difficulty must be one of"):
        make_chest_case(seed, "hard")

"""Writing phantom cases to disk: NIfTI, DICOM (series and single file), PNG, and the truth.

Every writer is byte-deterministic: no timestamps, UIDs derived from the case's seed with
``pydicom.uid.generate_uid(entropy_srcs=...)``, gzip without a modification time. The files
carry no real patient data: PatientName ``PHANTOM^<ANATOMY>``, PatientID the case id.

Layout of ``write_case(case, out_dir)``, one folder per case::

    out_dir/knee-000003/   image.nii.gz  label.nii.gz  dicom/0001.dcm ...  truth.json
    out_dir/fundus-000003/ image.png     label.png     truth.json
    out_dir/chest-000003/  image.dcm     image.png     label.png           truth.json
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medvl.scans.phantoms.case import PhantomCase

#: File names inside a case folder: (image a manifest points at, finding label map).
LAYOUT = {
    "knee": ("image.nii.gz", "label.nii.gz"),
    "fundus": ("image.png", "label.png"),
    "chest": ("image.dcm", "label.png"),
}
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def centred_affine(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """RAS voxel->world affine (diagonal, positive) with the volume centred on the origin."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


def write_nifti(volume: np.ndarray, spacing: tuple[float, ...], path: Path) -> Path:
    """Writes a 3D array ``(X, Y, Z)`` as NIfTI with a positive diagonal (RAS) affine."""
    img = nib.Nifti1Image(volume, centred_affine(volume.shape, spacing))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)  # scanner coordinates, so readers agree on the affine
    img.set_sform(img.affine, code=1)
    nib.save(img, path)
    return path


def write_png(image: np.ndarray, path: Path) -> Path:
    """Writes a channel-first ``(C, W, H)`` or ``(W, H)`` uint8 array as a PNG (H rows)."""
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(np.swapaxes(image, 0, 1))).save(path)
    return path


def _uid(case: PhantomCase, what: str) -> str:
    return generate_uid(entropy_srcs=["medvl-phantom", case.anatomy, str(case.seed), what])


def _base_dataset(case: PhantomCase, sop_class: str, sop_uid: str, modality: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_uid, modality
    ds.PatientName = f"PHANTOM^{case.anatomy.upper()}"
    ds.PatientID = case.case_id
    ds.StudyInstanceUID = _uid(case, "study")
    ds.SeriesInstanceUID = _uid(case, "series")
    ds.FrameOfReferenceUID = _uid(case, "frame")
    ds.StudyID, ds.SeriesNumber = "1", 1
    ds.SeriesDescription = case.description
    ds.Manufacturer = "medvl synthetic phantom"
    ds.BodyPartExamined = case.anatomy.upper()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.10g}"[:16]


def write_dicom_series(case: PhantomCase, folder: Path) -> Path:
    """Writes a 3D case as sagittal DICOM MR slices, one file per slice along x.

    Slices follow a real sagittal acquisition rather than the array axes: rows run from
    superior to inferior and columns from anterior to posterior (ImageOrientationPatient
    ``[0, 1, 0, 0, 0, -1]`` in DICOM's LPS), so a reader must honour the orientation to
    get the RAS array back. Values are stored as 12-bit integers with one RescaleSlope for
    the whole series; loading returns them to within half that slope.
    """
    volume = case.image[0]
    sx, sy, sz = case.spacing
    origin = centred_affine(volume.shape, case.spacing)[:3, 3]
    slope = float(_ds(max(float(volume.max()), 1e-6) / 4000.0))
    stored = np.clip(np.rint(volume / slope), 0, 4095).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = volume.shape
    for i in range(nx):
        sop = _uid(case, f"slice-{i}")
        ds = _base_dataset(case, _MR_STORAGE, sop, "MR")
        ds.InstanceNumber = i + 1
        ds.Rows, ds.Columns = nz, ny
        ds.PixelSpacing = [_ds(sz), _ds(sy)]  # [between rows, between columns]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(sx)
        ras = origin + np.array([i * sx, (ny - 1) * sy, (nz - 1) * sz])  # first pixel's centre
        ds.ImagePositionPatient = [_ds(-ras[0]), _ds(-ras[1]), _ds(ras[2])]  # RAS -> LPS
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        ds.PatientPosition = "FFS"
        ds.MRAcquisitionType = "2D"
        ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), "0", "US"
        # (Y, Z) -> rows along -z, columns along -y.
        ds.PixelData = np.ascontiguousarray(stored[i][::-1, ::-1].T).tobytes()
        ds.save_as(folder / f"{i + 1:04d}.dcm", enforce_file_format=True)
    return folder


def write_dicom_2d(case: PhantomCase, path: Path) -> Path:
    """Writes a 2D grayscale case as a DX DICOM file (MONOCHROME2, 12 bits, with a window)."""
    image = case.image[0]
    ds = _base_dataset(case, _DX_STORAGE, _uid(case, "image"), "DX")
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = image.shape[1], image.shape[0]
    ds.PixelSpacing = ds.ImagerPixelSpacing = [_ds(case.spacing[1]), _ds(case.spacing[0])]
    ds.PatientOrientation = ["L", "F"]  # columns towards the patient's left, rows to the feet
    ds.ViewPosition, ds.PresentationIntentType = "PA", "FOR PRESENTATION"
    lo, hi = np.percentile(image, [1, 99])
    ds.WindowCenter, ds.WindowWidth = _ds(round((lo + hi) / 2)), _ds(round(max(hi - lo, 1)))
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    ds.PixelData = np.ascontiguousarray(image.T.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def truth(case: PhantomCase) -> dict:
    """The ground truth of a case as plain JSON data (no arrays)."""
    return {
        "case_id": case.case_id,
        "seed": case.seed,
        "anatomy": case.anatomy,
        "modality": case.modality,
        "description": case.description,
        "shape": list(case.image.shape),
        "spacing": list(case.spacing),
        "grade": case.grade,
        "laterality": case.laterality,
        "findings": [
            {
                "name": f.name,
                "severity": f.severity,
                "box": None if f.box is None else list(f.box),
                "mask_label": f.mask_label,
                "location": f.location,
                "size_mm": f.size_mm,
            }
            for f in case.findings
        ],
        "structures": {k: list(v) for k, v in case.structures.items() if v is not None},
        "anatomy_labels": case.anatomy_labels,
        "measurements": case.measurements,
    }


def write_case(case: PhantomCase, out_dir: str | Path) -> dict[str, Path]:
    """Writes one case to ``out_dir/<case_id>/`` and records the paths in ``case.paths``.

    Args:
        case: A case from ``make_knee_case``, ``make_fundus_case`` or ``make_chest_case``.
        out_dir: Parent folder; created if needed.

    Returns:
        Kind -> path: ``image`` (what a manifest should point at: NIfTI for the knee, PNG for
        the fundus, DICOM for the chest), ``label`` (the finding label map), ``truth`` (JSON),
        and per format ``nifti``, ``dicom`` (file or series folder), ``png``.
    """
    if case.anatomy not in LAYOUT:
        raise ValueError(f"unknown phantom anatomy {case.anatomy!r}")
    folder = Path(out_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    image, label = (folder / name for name in LAYOUT[case.anatomy])
    paths: dict[str, Path] = {}
    if case.anatomy == "knee":
        paths["nifti"] = paths["image"] = write_nifti(case.image[0], case.spacing, image)
        paths["label"] = write_nifti(case.mask, case.spacing, label)
        paths["dicom"] = write_dicom_series(case, folder / "dicom")
    elif case.anatomy == "fundus":
        paths["png"] = paths["image"] = write_png(case.image, image)
        paths["label"] = write_png(case.mask, label)
    else:
        paths["dicom"] = paths["image"] = write_dicom_2d(case, image)
        eight_bit = (case.image.astype(np.float32) * (255.0 / 4095.0) + 0.5).astype(np.uint8)
        paths["png"] = write_png(eight_bit, folder / "image.png")
        paths["label"] = write_png(case.mask, label)
    paths["truth"] = folder / "truth.json"
    paths["truth"].write_text(json.dumps(truth(case), indent=1, sort_keys=True) + "\n")
    case.paths = dict(paths)
    return paths

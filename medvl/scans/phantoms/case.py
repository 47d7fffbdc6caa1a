"""The ground-truth record of a phantom case and the helpers every phantom shares.

A phantom is drawn in the same array layout that ``medvl.scans.load_scan`` returns, so a box
computed here points at the same voxels after the written file is loaded back:

* 3D: ``(C, X, Y, Z)`` with the axes in RAS order (x: patient left-right, y: posterior ->
  anterior, z: inferior -> superior).
* 2D: ``(C, W, H)``: axis 0 runs left to right across the displayed image, axis 1 top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

Box = tuple[float, ...]

# Per-phantom salt, so knee seed 3 and chest seed 3 do not share random streams.
_SALT = {"knee": 0x6B6E6565, "fundus": 0x66756E64, "chest": 0x63686573}


@dataclass
class Finding:
    """One finding of a phantom case.

    Attributes:
        name: Key of the finding, e.g. ``"bone_marrow_lesion"``.
        severity: Grade 0-3; 0 means absent (no voxel of ``mask_label`` in the case's mask).
        box: Exact bounding box of the finding's mask voxels in medvl's normalised convention
            (``[x1, y1, x2, y2]`` or ``[x1, y1, z1, x2, y2, z2]``, corners on voxel edges), or
            None when absent.
        mask_label: Value of the finding's voxels in ``PhantomCase.mask``.
        location: Where it is, in words (e.g. ``"medial femoral condyle"``), or None.
        size_mm: Largest extent of the finding's mask in millimetres (0 when absent).
    """

    name: str
    severity: int
    box: Box | None
    mask_label: int
    location: str | None = None
    size_mm: float = 0.0

    @property
    def present(self) -> bool:
        return self.severity > 0


@dataclass
class PhantomCase:
    """A synthetic scan with exact ground truth.

    Attributes:
        case_id: File stem and sample id prefix, e.g. ``"knee-000012"``.
        seed: The seed that made it; the same seed always gives the same arrays.
        anatomy: ``"knee"``, ``"fundus"`` or ``"chest"``.
        modality: As in a manifest: ``"MRI"``, ``"fundus"`` or ``"X-ray"``.
        image: Channel-first image, ``(1, X, Y, Z)`` float32 (knee), ``(3, W, H)`` uint8
            (fundus) or ``(1, W, H)`` uint16 12-bit (chest).
        spacing: Millimetres per voxel along each spatial axis.
        mask: Finding label map, the image's spatial shape, uint8; 0 is background.
        findings: Every finding the phantom models, absent ones included (severity 0).
        anatomy_mask: Tissue label map, same shape as ``mask``.
        anatomy_labels: Tissue name -> value in ``anatomy_mask``.
        structures: Landmark name -> exact bounding box of its tissue in ``anatomy_mask``,
            so every case has something to ground even when it has no finding.
        grade: Case-level grade (fundus: diabetic retinopathy grade 0-4), else None.
        laterality: ``"left"``/``"right"`` (knee and eye), None for the chest.
        description: The acquisition, in words (e.g. ``"sagittal PD fat-saturated MRI"``).
        measurements: Named measurements on the ground truth, e.g. the chest's
            ``cardiothoracic_ratio``.
        paths: Filled by ``write_case``: kind (``"nifti"``, ``"dicom"``, ``"png"``, ...) -> path.
    """

    case_id: str
    seed: int
    anatomy: str
    modality: str
    image: np.ndarray
    spacing: tuple[float, ...]
    mask: np.ndarray
    findings: list[Finding]
    anatomy_mask: np.ndarray
    anatomy_labels: dict[str, int]
    structures: dict[str, Box] = field(default_factory=dict)
    grade: int | None = None
    laterality: str | None = None
    description: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def finding(self, name: str) -> Finding:
        """The finding called ``name`` (present or not).

        Raises:
            KeyError: If this phantom does not model that finding.
        """
        for f in self.findings:
            if f.name == name:
                return f
        raise KeyError(f"{self.case_id} has no finding {name!r}")

    @property
    def present(self) -> list[Finding]:
        """Findings with severity > 0, most severe first (ties keep the modelled order)."""
        return sorted((f for f in self.findings if f.present), key=lambda f: -f.severity)


def rng_for(anatomy: str, seed: int) -> np.random.Generator:
    """The random stream of one case: a function of the phantom kind and the seed only."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([_SALT[anatomy], seed])


def mask_box(mask: np.ndarray) -> Box | None:
    """Exact bounding box of the True voxels, normalised with corners on voxel edges.

    Returns:
        ``[x1, y1, (z1,) x2, y2, (z2)]`` as a tuple of floats, or None for an empty mask.
    """
    if not mask.any():
        return None
    lows, highs = [], []
    for axis, n in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        lows.append(float(hits[0]) / n)
        highs.append(float(hits[-1] + 1) / n)
    return tuple(lows + highs)


def extent_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Largest bounding-box side of the True voxels in millimetres (0 for an empty mask)."""
    box = mask_box(mask)
    if box is None:
        return 0.0
    half = len(box) // 2
    sides = [
        (box[i + half] - box[i]) * n * s
        for i, (n, s) in enumerate(zip(mask.shape, spacing, strict=True))
    ]
    return round(float(max(sides)), 1)


def label_findings(
    names: tuple[str, ...],
    masks: dict[str, np.ndarray],
    grades: dict[str, int],
    where: dict[str, str],
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    empty: str,
) -> tuple[np.ndarray, list[Finding]]:
    """The finding label map and one `Finding` per name, from each finding's own mask.

    Finding k of ``names`` gets label value k (later findings drawn over earlier ones); its box
    and extent come from its whole mask. A name without a mask has an empty one.

    Raises:
        RuntimeError: A finding with a grade has no voxel; the message is ``empty`` formatted
            with ``name`` and ``grade``.
    """
    label = np.zeros(shape, np.uint8)
    findings = []
    for value, name in enumerate(names, 1):
        m = masks.get(name, np.zeros(shape, bool))
        if grades[name] and not m.any():
            raise RuntimeError(empty.format(name=name, grade=grades[name]))
        label[m] = value
        findings.append(
            Finding(name, grades[name], mask_box(m), value, where.get(name), extent_mm(m, spacing))
        )
    return label, findings


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...]
) -> np.ndarray:
    """Band-limited noise with zero mean and unit standard deviation.

    Real tissue is never flat: this gives marrow trabeculae, lung markings, choroidal texture,
    and (with a large sigma) coil or illumination shading.
    """
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def blob(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, ...],
    center: tuple[float, ...],
    radii: tuple[float, ...],
    roughness: float = 0.25,
) -> np.ndarray:
    """An irregular ellipsoid (2D or 3D): a boolean mask with a noisy border.

    Args:
        rng: Random stream.
        grid: Coordinates of every voxel (e.g. from ``np.indices``), in the same units as
            ``center`` and ``radii``.
        center: Centre of the ellipsoid.
        radii: Semi-axes; ``roughness`` perturbs them by up to that fraction.
        roughness: Amplitude of the border noise, so lesions are not perfect ellipses.
    """
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True))
    wobble = 1.0 + roughness * smooth_noise(rng, r2.shape, 2.0).clip(-1.5, 1.5) / 1.5
    inside = r2 <= wobble**2
    if not inside.any():  # a lesion of grade > 0 must own at least the voxel nearest its centre
        inside.flat[np.argmin(r2)] = True
    return inside

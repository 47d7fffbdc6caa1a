"""Knee MRI phantom: a sagittal proton-density fat-saturated 3D volume with MOAKS-like findings.

The volume is ``(1, X, Y, Z)`` in RAS order (x: towards the patient's right, y: anterior,
z: superior) with thick sagittal slices: 1.5 mm across x, 0.75 mm in plane. Anatomy (femur,
tibia, patella with marrow texture and cortex, femoral/tibial/patellar cartilage, C-shaped
wedge menisci, tendons, Hoffa's fat pad, muscle and subcutaneous fat) is drawn from signed
distances in millimetres, with sizes and positions varied by the seed. Intensities follow a
fat-saturated PD contrast: fluid bright, cartilage intermediate, marrow and fat dark, menisci,
tendons and cortex black.

Findings, each graded 0-3 (0 = absent) and labelled in ``PhantomCase.mask``:

1. ``bone_marrow_lesion``: oedema-like bright blob in subchondral marrow (size by grade).
2. ``cartilage_defect``: cartilage replaced by fluid; grade 1 partial, 2-3 full thickness.
3. ``meniscal_tear``: bright cleavage through a meniscal horn; longer with grade, 3 complex.
4. ``effusion``: distended suprapatellar recess (fluid depth by grade).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from medvl.scans.phantoms.case import (
    Finding,
    PhantomCase,
    blob,
    extent_mm,
    mask_box,
    rng_for,
    smooth_noise,
)

SHAPE = (48, 96, 96)
SPACING = (1.5, 0.75, 0.75)
FINDINGS = ("bone_marrow_lesion", "cartilage_defect", "meniscal_tear", "effusion")
TISSUES = {
    "muscle": 1, "fat": 2, "femur": 3, "tibia": 4, "patella": 5, "cartilage": 6,
    "meniscus": 7, "fluid": 8, "tendon": 9,
}  # fmt: skip
# Fat-saturated PD signal per tissue (arbitrary scanner units); index = tissue label.
_SIGNAL = np.array([0, 330, 120, 190, 190, 190, 600, 45, 950, 55], np.float32)
_LESION_SIGNAL = {"bone_marrow_lesion": 640.0, "cartilage_defect": 940.0, "meniscal_tear": 800.0}
BONE_LOCATIONS = (
    "medial femoral condyle", "lateral femoral condyle",
    "medial tibial plateau", "lateral tibial plateau",
)  # fmt: skip
MENISCAL_HORNS = (
    "posterior horn of the medial meniscus", "anterior horn of the medial meniscus",
    "posterior horn of the lateral meniscus", "anterior horn of the lateral meniscus",
)  # fmt: skip


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centres in mm, centred on the field of view, as broadcastable open grids."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(SHAPE, SPACING, strict=True)]
    x, y, z = (a.astype(np.float32) for a in axes)
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _ellipsoid(g, center, radii) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid: < 0 inside."""
    q = np.sqrt(sum(((a - c) / r) ** 2 for a, c, r in zip(g, center, radii, strict=True)))
    return (q - 1.0) * functools.reduce(np.minimum, radii)  # radii may be arrays (a taper)


def _segment_distance(y, z, p0, p1) -> np.ndarray:
    """Distance (mm) in the sagittal plane from each voxel to the segment p0-p1."""
    dy, dz = p1[0] - p0[0], p1[1] - p0[1]
    u = np.clip(((y - p0[0]) * dy + (z - p0[1]) * dz) / (dy**2 + dz**2), 0.0, 1.0)
    return np.hypot(y - p0[0] - u * dy, z - p0[1] - u * dz)


def _anatomy(rng: np.random.Generator, g) -> dict:
    """Samples the geometry of one knee; returns signed distances, masks and landmarks."""
    x, y, z = g
    s = rng.uniform(0.9, 1.08)  # overall size
    cx, yc, z0 = rng.uniform(-3, 3), rng.uniform(-5, 2), rng.uniform(-5, 3)
    t = rng.uniform(1.8, 2.4)  # cartilage thickness, mm
    med = rng.choice((-1.0, 1.0))  # medial side along x: -1 for a right knee (x points right)
    xk = {"medial": cx + med * 11 * s, "lateral": cx - med * 11 * s}
    rz = 12 * s
    zc = z0 + t + 0.2 + rz  # condyle centres: femur sits one cartilage pair above the joint line
    zt = z0 - t - 0.2  # tibial plateau (bone surface)
    d_cond = np.minimum(
        _ellipsoid(g, (xk["medial"], yc, zc), (10 * s, 16 * s, rz)),
        _ellipsoid(g, (xk["lateral"], yc, zc), (10 * s, 16 * s, rz)),
    )
    flare = np.clip((zc + 22 - z) / 22.0, 0.0, 1.0)  # the shaft widens into the metaphysis
    radii = (14 * s + 7 * s * flare, 10 * s + 5 * s * flare)
    d_femur = np.minimum(d_cond, np.maximum(_ellipsoid((x, y), (cx, yc - 1), radii), zc - z))
    ramp = np.clip((z - (zt - 28)) / 18.0, 0.0, 1.0)  # tibial shaft flares into the plateau
    d_tibia = np.maximum(
        _ellipsoid((x, y), (cx, yc - 2), (13 * s + 9 * s * ramp, 11 * s + 5 * s * ramp)), z - zt
    )
    pat = (cx, yc + 16 * s + 2 * t + 5 * s, zc + 5 * s)
    d_patella = _ellipsoid(g, pat, (12 * s, 5 * s, 10 * s))
    d_limb = np.broadcast_to(_ellipsoid((x, y), (cx, yc + 4), (33.0, 30.0)), SHAPE)
    return {
        "s": s,
        "cx": cx,
        "yc": yc,
        "zc": zc,
        "zt": zt,
        "t": t,
        "med": med,
        "xk": xk,
        "pat": pat,
        "d_cond": d_cond,
        "d_femur": d_femur,
        "d_tibia": d_tibia,
        "d_patella": d_patella,
        "d_limb": d_limb,
        "laterality": "right" if med < 0 else "left",
    }


def _menisci(a: dict, g) -> dict[str, np.ndarray]:
    """C-shaped wedge menisci on each tibial plateau, thickest at the periphery."""
    x, y, z = g
    out = {}
    for side, xk in a["xk"].items():
        sign = np.sign(xk - a["cx"])  # points away from the intercondylar notch
        rho = np.sqrt(((x - xk) / (10.5 * a["s"])) ** 2 + ((y - a["yc"]) / (17 * a["s"])) ** 2)
        height = 2.6 * a["t"] * np.clip((rho - 0.62) / 0.35, 0.0, 1.0)
        wedge = (rho >= 0.62) & (rho <= 1.12) & (z >= a["zt"]) & (z - a["zt"] <= height)
        opening = 0.45 if side == "medial" else 0.25  # the medial C is more open than the lateral
        notch = ((x - xk) * sign < 0) & (np.abs(y - a["yc"]) < opening * 17 * a["s"])
        out[side] = wedge & ~notch
    return out


def _tissues(a: dict, g, menisci: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """Paints the tissue label map (later tissues overwrite earlier ones)."""
    x, y, z = g
    t, cx, pat = a["t"], a["cx"], a["pat"]
    lab = np.zeros(SHAPE, np.uint8)
    lab[a["d_limb"] <= 0] = TISSUES["muscle"]
    lab[(a["d_limb"] <= 0) & (a["d_limb"] > -4.0)] = TISSUES["fat"]
    # Hoffa's fat pad: between the patellar tendon and the joint, below the patella.
    hoffa_c = (cx, pat[1] - 3, (a["zt"] + pat[2]) / 2 - 3)
    hoffa = _ellipsoid(g, hoffa_c, (12.0, 6.0, (pat[2] - a["zt"]) / 2)) <= 0
    lab[hoffa & (a["d_limb"] < -4)] = TISSUES["fat"]
    # Quadriceps and patellar tendons: dark bands anterior to and below the patella.
    band_x = np.abs(x - cx) < 9
    quad = (np.abs(y - (pat[1] + 1.5)) < 1.6) & (z > pat[2] + 6)
    frac = np.clip((pat[2] - 6 - z) / (pat[2] - a["zt"] + 6), 0.0, 1.0)
    lig = (np.abs(y - (pat[1] + 3 - 4 * frac)) < 1.6) & (z < pat[2] - 6) & (z > a["zt"] - 12)
    lab[band_x & (quad | lig) & (a["d_limb"] < -4)] = TISSUES["tendon"]
    # Cruciate ligaments: dark bands crossing in the intercondylar notch.
    notch = np.abs(x - cx) < 3 * a["s"]
    pcl = ((a["yc"] - 12 * a["s"], a["zt"] - 3), (a["yc"] + 2, a["zc"] - 3))
    acl = ((a["yc"] + 8 * a["s"], a["zt"] + 0.5), (a["yc"] - 6 * a["s"], a["zc"] + 1))
    for p0, p1 in (pcl, acl):
        lab[notch & (_segment_distance(y, z, p0, p1) < 1.6)] = TISSUES["tendon"]
    # A thin physiological fluid film in the suprapatellar recess (no finding).
    film = (a["d_femur"] > 0) & (a["d_femur"] < t + 1.2) & (y > a["yc"] + 6) & (z > a["zc"])
    lab[film & (z < pat[2] + 16) & (np.abs(x - cx) < 16)] = TISSUES["fluid"]
    plateau = _ellipsoid((x, y), (cx, a["yc"] - 2), (21 * a["s"], 15 * a["s"])) <= 0
    tib_cart = (z > a["zt"]) & (z - a["zt"] <= t) & plateau
    fem_cart = (a["d_cond"] > 0) & (a["d_cond"] <= t) & (a["d_femur"] > 0)
    fem_cart &= (z < a["zc"]) | ((y > a["yc"] + 6) & (z < a["zc"] + 12))  # condyles, trochlea
    fem_cart &= (np.abs(x - cx) > 4 * a["s"]) | (y > a["yc"] + 6)  # none on the notch walls
    pat_cart = (a["d_patella"] > 0) & (a["d_patella"] <= 1.2 * t) & (y < pat[1])
    lab[tib_cart] = TISSUES["cartilage"]
    lab[menisci["medial"] | menisci["lateral"]] = TISSUES["meniscus"]
    lab[fem_cart | pat_cart] = TISSUES["cartilage"]
    lab[a["d_femur"] <= 0] = TISSUES["femur"]
    lab[a["d_tibia"] <= 0] = TISSUES["tibia"]
    lab[a["d_patella"] <= 0] = TISSUES["patella"]
    lab[a["d_limb"] > 0] = 0
    parts = {
        "femoral": fem_cart & (lab == TISSUES["cartilage"]),
        "tibial": tib_cart & (lab == TISSUES["cartilage"]),
    }
    return lab, parts


def _grade(rng: np.random.Generator) -> int:
    # Half the cases lack each finding, so "is there X?" has no prior worth learning.
    return 0 if rng.random() < 0.5 else int(rng.integers(1, 4))


def _bone_marrow_lesion(rng, a, g, lab, grade) -> tuple[np.ndarray, str]:
    where = BONE_LOCATIONS[rng.integers(4)]
    side = "medial" if where.startswith("medial") else "lateral"
    femoral = "femoral" in where
    r = (3.0, 5.0, 7.5)[grade - 1] * rng.uniform(0.9, 1.15)
    surface = a["zc"] - 12 * a["s"] if femoral else a["zt"]  # subchondral plate under load
    zc = surface + (1.0 if femoral else -1.0) * (1.2 + 0.7 * r)
    center = (a["xk"][side] + rng.uniform(-2, 2), a["yc"] + rng.uniform(-6, 6), zc)
    bone = TISSUES["femur" if femoral else "tibia"]
    d = a["d_femur"] if femoral else a["d_tibia"]
    marrow = (lab == bone) & (d < -1.2)
    return blob(rng, g, center, (r * 0.8, r, r * 0.8)) & marrow, where


def _cartilage_defect(rng, a, g, parts, grade) -> tuple[np.ndarray, str]:
    where = BONE_LOCATIONS[rng.integers(4)]
    side = "medial" if where.startswith("medial") else "lateral"
    femoral = "femoral" in where
    r = (3.0, 4.0, 6.5)[grade - 1] * rng.uniform(0.9, 1.15)
    t = a["t"]
    zc = a["zc"] - 12 * a["s"] - t / 2 if femoral else a["zt"] + t / 2
    center = (a["xk"][side] + rng.uniform(-1.5, 1.5), a["yc"] + rng.uniform(-5, 5), zc)
    plate = parts["femoral" if femoral else "tibial"]
    plate = plate & ((g[0] - a["cx"]) * (a["xk"][side] - a["cx"]) > 0)  # this compartment only
    defect = blob(rng, g, center, (r, r, 2 * t), roughness=0.2) & plate
    if grade == 1:  # partial thickness: only the half of the cartilage away from the bone
        depth = a["d_cond"] if femoral else g[2] - a["zt"]
        defect &= depth > t / 2
    return defect, where


def _meniscal_tear(rng, a, g, menisci, grade) -> tuple[np.ndarray, str]:
    where = MENISCAL_HORNS[rng.integers(4)]
    side = "medial" if "medial meniscus" in where else "lateral"
    x, y, z = g
    xk = a["xk"][side]
    rho = np.sqrt(((x - xk) / (10.5 * a["s"])) ** 2 + ((y - a["yc"]) / (17 * a["s"])) ** 2)
    horn = (y < a["yc"] - 4) if where.startswith("posterior") else (y > a["yc"] + 4)
    reach = 0.62 + (0.2, 0.35, 0.5)[grade - 1]
    mid = a["zt"] + 1.3 * a["t"] * np.clip((rho - 0.62) / 0.35, 0.0, 1.0)
    cleft = (np.abs(z - mid) <= 0.8) & (rho <= reach)
    if grade == 3:  # complex tear: a vertical component joins the horizontal cleavage
        cleft |= np.abs(rho - 0.85) < 0.05
    tear = menisci[side] & horn & cleft
    if not tear.any():  # a very thin horn: take its central layer instead
        tear = menisci[side] & horn & (rho <= reach)
    return tear, where


def _effusion(rng, a, g, lab, grade) -> np.ndarray:
    x, y, z = g
    depth = (3.0, 6.0, 10.0)[grade - 1] * rng.uniform(0.9, 1.1)
    front = a["yc"] - 1 + 12 * a["s"]  # anterior cortex of the distal femoral metaphysis
    center = (a["cx"], front + depth / 2, a["pat"][2] + 3 + 2 * grade)
    pouch = _ellipsoid(g, center, (10 + 3 * grade, depth / 2 + 1, 5 + 2.5 * grade))
    soft = np.isin(lab, (TISSUES["muscle"], TISSUES["fat"], TISSUES["fluid"], TISSUES["tendon"]))
    return (pouch <= 0) & soft & (y > front - 1)


def _render(rng, a, lab, lesions: dict[str, np.ndarray]) -> np.ndarray:
    img = _SIGNAL[lab]
    bone = np.isin(lab, (TISSUES["femur"], TISSUES["tibia"], TISSUES["patella"]))
    trabeculae = smooth_noise(rng, SHAPE, (0.6, 1.0, 1.0))
    img = np.where(bone, img * (1.0 + 0.22 * trabeculae), img)
    d_bone = np.minimum(np.minimum(a["d_femur"], a["d_tibia"]), a["d_patella"])
    img[bone & (d_bone > -1.0)] = 35.0  # cortex and subchondral plate: no signal
    fibres = smooth_noise(rng, SHAPE, (0.8, 0.8, 3.0))  # muscle fibres run along z
    img = np.where(lab == TISSUES["muscle"], img * (1.0 + 0.12 * fibres), img)
    for name, mask in lesions.items():
        if name in _LESION_SIGNAL:
            img[mask] = _LESION_SIGNAL[name] * (1.0 + 0.08 * trabeculae[mask])
        else:
            img[mask] = _SIGNAL[TISSUES["fluid"]]
    img = ndimage.gaussian_filter(img, (0.5, 0.6, 0.6))  # partial volume
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE)
    c = rng.uniform(-0.12, 0.12, 4)  # surface-coil shading: smooth, a few per cent per cm
    bias = 1.0 + c[0] * x[:, None, None] + c[1] * y[None, :, None] + c[2] * z[None, None, :]
    bias = bias + c[3] * (y[None, :, None] ** 2)
    sigma = rng.uniform(12.0, 20.0)
    real = img * bias + rng.normal(0.0, sigma, SHAPE).astype(np.float32)
    imag = rng.normal(0.0, sigma, SHAPE).astype(np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)  # magnitude images have Rician noise


def make_knee_case(seed: int) -> PhantomCase:
    """Builds the knee MRI phantom of one seed.

    Args:
        seed: Any integer >= 0; the same seed always gives the same case.

    Returns:
        A `PhantomCase` with a ``(1, 48, 96, 96)`` float32 image (RAS, spacing 1.5 x 0.75 x
        0.75 mm), the finding label map and the four findings of `FINDINGS`.
    """
    rng = rng_for("knee", seed)
    g = _grid()
    a = _anatomy(rng, g)
    menisci = _menisci(a, g)
    lab, parts = _tissues(a, g, menisci)
    menisci = {side: m & (lab == TISSUES["meniscus"]) for side, m in menisci.items()}
    grades = {name: _grade(rng) for name in FINDINGS}
    masks: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    if grades["bone_marrow_lesion"]:
        masks["bone_marrow_lesion"], where["bone_marrow_lesion"] = _bone_marrow_lesion(
            rng, a, g, lab, grades["bone_marrow_lesion"]
        )
    if grades["cartilage_defect"]:
        masks["cartilage_defect"], where["cartilage_defect"] = _cartilage_defect(
            rng, a, g, parts, grades["cartilage_defect"]
        )
    if grades["meniscal_tear"]:
        masks["meniscal_tear"], where["meniscal_tear"] = _meniscal_tear(
            rng, a, g, menisci, grades["meniscal_tear"]
        )
    if grades["effusion"]:
        masks["effusion"] = _effusion(rng, a, g, lab, grades["effusion"])
        where["effusion"] = "suprapatellar recess"
        lab[masks["effusion"]] = TISSUES["fluid"]
    image = _render(rng, a, lab, masks)
    label = np.zeros(SHAPE, np.uint8)
    findings = []
    for value, name in enumerate(FINDINGS, 1):
        if name in masks:
            label[masks[name]] = value
    for value, name in enumerate(FINDINGS, 1):
        m = label == value
        if grades[name] and not m.any():
            raise RuntimeError(f"knee seed {seed}: {name} of grade {grades[name]} has no voxel")
        findings.append(
            Finding(name, grades[name], mask_box(m), value, where.get(name), extent_mm(m, SPACING))
        )
    structures = {name: mask_box(lab == TISSUES[name]) for name in ("patella", "femur", "tibia")}
    structures["menisci"] = mask_box(lab == TISSUES["meniscus"])
    return PhantomCase(
        case_id=f"knee-{seed:06d}",
        seed=seed,
        anatomy="knee",
        modality="MRI",
        image=image[None],
        spacing=SPACING,
        mask=label,
        findings=findings,
        anatomy_mask=lab,
        anatomy_labels=dict(TISSUES),
        structures=structures,
        laterality=a["laterality"],
        description="sagittal proton-density fat-saturated MRI",
    )

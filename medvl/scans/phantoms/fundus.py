"""Retinal fundus phantom: a 2D colour photograph with diabetic-retinopathy lesions.

The image is ``(3, W, H)`` uint8 (x = axis 0, left to right). A macula-centred 45-degree view:
a circular field of view with vignetting, orange fundus with choroidal texture, the optic disc
(with cup) on the nasal side (image right for a right eye), the darker macula with a foveal
reflex, and four arcades of arteries and veins grown as branching random walks.

Lesions (each graded 0-3 by count, labelled in ``PhantomCase.mask``): haemorrhages, hard
exudates, microaneurysms, drusen and neovascularisation. The case's ``grade`` is the ICDR
diabetic-retinopathy grade, drawn first; the lesions are then drawn to be consistent with it:

=====  ============================================================================
grade  lesions
=====  ============================================================================
0      none of the DR lesions (drusen are age-related, not DR, and may appear anywhere)
1      microaneurysms only
2      microaneurysms plus haemorrhages (in at most three quadrants) and/or exudates
3      haemorrhages in all four quadrants (the "4" of the 4-2-1 rule), no new vessels
4      neovascularisation, with any of the above
=====  ============================================================================
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medvl.scans.phantoms.case import PhantomCase, label_findings, mask_box, rng_for
from medvl.scans.phantoms.case import smooth_noise as _noise
from medvl.scans.phantoms.draw import grow_tree, render_lines

SIZE = 256
SPACING = (0.047, 0.047)  # mm per pixel: a 45-degree field spans about 12 mm of retina
FINDINGS = ("haemorrhages", "hard_exudates", "microaneurysms", "drusen", "neovascularisation")
DR_GRADES = (
    "no diabetic retinopathy", "mild non-proliferative diabetic retinopathy",
    "moderate non-proliferative diabetic retinopathy",
    "severe non-proliferative diabetic retinopathy", "proliferative diabetic retinopathy",
)  # fmt: skip
QUADRANTS = ("superotemporal", "superonasal", "inferotemporal", "inferonasal")
TISSUES = {"retina": 1, "optic_disc": 2, "optic_cup": 3, "macula": 4, "vessels": 5}
_COLOURS = {
    "haemorrhages": (0.36, 0.05, 0.03), "hard_exudates": (0.98, 0.88, 0.42),
    "microaneurysms": (0.40, 0.04, 0.03), "drusen": (0.92, 0.78, 0.50),
    "neovascularisation": (0.62, 0.09, 0.07),
}  # fmt: skip


def _severities(rng: np.random.Generator, grade: int) -> dict[str, int]:
    """Lesion grades consistent with the DR grade (see the module docstring)."""
    s = dict.fromkeys(FINDINGS, 0)
    if grade >= 1:
        s["microaneurysms"] = int(rng.integers(1, 3 if grade == 1 else 4))
    if grade == 2:
        s["haemorrhages"] = int(rng.integers(0, 3))
        s["hard_exudates"] = int(rng.integers(0 if s["haemorrhages"] else 1, 4))
    if grade == 3:
        s["haemorrhages"], s["hard_exudates"] = 3, int(rng.integers(0, 4))
    if grade == 4:
        s["neovascularisation"] = int(rng.integers(1, 4))
        s["haemorrhages"], s["hard_exudates"] = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    s["drusen"] = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))
    return s


class _Retina:
    """Geometry of one eye, and a canvas that refuses overlapping lesions."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.x = np.arange(SIZE, dtype=np.float32)[:, None]
        self.y = np.arange(SIZE, dtype=np.float32)[None, :]
        self.center = np.array([128 + rng.uniform(-3, 3), 128 + rng.uniform(-3, 3)])
        self.radius = rng.uniform(116, 123)
        self.side = 1.0 if rng.random() < 0.5 else -1.0  # +1: right eye, disc on image right
        self.disc_r = rng.uniform(12, 15)
        self.fovea = self.center + np.array([-self.side * rng.uniform(0, 6), rng.uniform(-4, 4)])
        self.disc = self.fovea + np.array([self.side * 5 * self.disc_r, -rng.uniform(2, 8)])
        self.occupied = self.dist(self.disc) < self.disc_r + 3  # no lesion on the disc

    def dist(self, p) -> np.ndarray:
        return np.hypot(self.x - p[0], self.y - p[1])

    def inside(self, x: float, y: float, margin: float = 2.0) -> bool:
        return bool(np.hypot(x - self.center[0], y - self.center[1]) < self.radius - margin)

    def quadrant(self, p) -> str:
        """Quadrant of a point around the fovea; temporal is away from the disc."""
        up = p[1] < self.fovea[1]
        temporal = (p[0] - self.fovea[0]) * self.side < 0
        return QUADRANTS[(0 if up else 2) + (0 if temporal else 1)]

    def spot(self, quadrant: str | None, near: float, far: float) -> np.ndarray:
        """A random point at ``near``-``far`` disc radii from the fovea, in a quadrant."""
        for _ in range(50):
            a = self.rng.uniform(0, 2 * np.pi)
            d = self.rng.uniform(near, far) * self.disc_r
            p = self.fovea + d * np.array([np.cos(a), np.sin(a)])
            if self.inside(*p, margin=10) and (quadrant is None or self.quadrant(p) == quadrant):
                return p
        # Far quadrants can be cut by the field edge; fall back to the quadrant's nearest part.
        q = QUADRANTS.index(quadrant) if quadrant else 0
        sx = (-1.0 if q in (0, 2) else 1.0) * self.side
        sy = -1.0 if q < 2 else 1.0
        return self.fovea + near * self.disc_r * np.array([sx, sy]) / np.sqrt(2)

    def place(self, p, radii, angle: float = 0.0) -> np.ndarray | None:
        """Footprint of an ellipse at ``p``; None if it would touch another lesion."""
        c, s = np.cos(angle), np.sin(angle)
        u = ((self.x - p[0]) * c + (self.y - p[1]) * s) / radii[0]
        v = (-(self.x - p[0]) * s + (self.y - p[1]) * c) / radii[1]
        foot = u**2 + v**2 <= 1.0
        if not foot.any() or (ndimage.binary_dilation(foot, iterations=2) & self.occupied).any():
            return None
        self.occupied |= foot
        return foot


def _lesions(rng, eye: _Retina, sev: dict[str, int]) -> tuple[dict, dict]:
    """Footprints (bool masks) and locations of every lesion type with severity > 0."""
    masks: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}

    def scatter(name, count, radius, pick, elongate=1.0):
        """Places ``count`` lesions at points from ``pick(i)``, retrying on overlap."""
        m = masks.get(name, np.zeros((SIZE, SIZE), bool))
        placed = []
        for i in range(count):
            for _ in range(20):
                p = pick(i)
                if not eye.inside(*p, margin=6):
                    continue
                r, e = rng.uniform(*radius), rng.uniform(1.0, elongate)
                angle = np.arctan2(p[1] - eye.disc[1], p[0] - eye.disc[0])  # along nerve fibres
                foot = eye.place(p, (r * e, r / e), angle)
                if foot is not None:
                    m |= foot
                    placed.append((r, eye.quadrant(p)))
                    break
        if placed:
            masks[name] = m
            where.setdefault(name, max(placed)[1])  # the quadrant of the largest one

    if s := sev["neovascularisation"]:  # first, so it gets its spot at the disc or an arcade
        at_disc = rng.random() < 0.5
        base = eye.disc if at_disc else eye.spot(None, 2.5, 3.5)
        r = (7.0, 11.0, 16.0)[s - 1]
        inside = lambda x, y: np.hypot(x - base[0], y - base[1]) < r  # noqa: E731
        loops = []
        for _ in range(2 + s):
            start = base + rng.uniform(-r / 2, r / 2, 2)
            heading, width = rng.uniform(0, 2 * np.pi), rng.uniform(0.9, 1.3)
            loops += grow_tree(
                rng,
                start,
                heading,
                width,
                inside,
                wiggle=0.45,
                branch_p=0.08,
                taper=1.0,
                max_steps=160,
            )
        cover, _ = render_lines((SIZE, SIZE), loops)
        masks["neovascularisation"] = cover >= 0.5
        eye.occupied |= ndimage.binary_dilation(masks["neovascularisation"], iterations=2)
        where["neovascularisation"] = "optic disc" if at_disc else f"{eye.quadrant(base)} arcade"
    if s := sev["haemorrhages"]:
        quads = list(rng.permutation(QUADRANTS))[: (1, int(rng.integers(2, 4)), 4)[s - 1]]
        n = (int(rng.integers(1, 4)), int(rng.integers(4, 8)), 4 * int(rng.integers(3, 5)))[s - 1]
        scatter(
            "haemorrhages",
            n,
            (2.2, 5.0),
            lambda i: eye.spot(quads[i % len(quads)], 0.8, 4.5),
            elongate=1.8,
        )
    for _ in range(sev["hard_exudates"]):  # clusters of waxy spots around a leaking focus
        hub = eye.spot(None, 1.0, 3.0)
        n = int(rng.integers(3, 8))
        scatter("hard_exudates", n, (0.9, 2.2), lambda i, hub=hub: hub + rng.normal(0, 5, 2))
    if s := sev["microaneurysms"]:
        n = (int(rng.integers(1, 4)), int(rng.integers(4, 9)), int(rng.integers(9, 15)))[s - 1]
        scatter("microaneurysms", n, (0.9, 1.5), lambda i: eye.spot(None, 0.6, 3.0))
    if s := sev["drusen"]:
        n = (int(rng.integers(3, 7)), int(rng.integers(7, 15)), int(rng.integers(15, 26)))[s - 1]
        scatter("drusen", n, (1.5, 3.5), lambda i: eye.spot(None, 0.3, 1.8))
        where["drusen"] = "macula"
    return masks, where


def _vessels(rng, eye: _Retina) -> tuple[list, list]:
    """Arteries and veins: four arcades leaving the disc, temporal ones bending round the macula."""
    arteries, veins = [], []
    for up in (-1.0, 1.0):  # superior (towards -y) and inferior arcades
        for temporal in (True, False):
            away = -eye.side if temporal else eye.side
            heading = np.arctan2(up, away * (0.35 if temporal else 0.9))
            turn = (0.0045 if temporal else 0.0015) * -up * away  # bend towards the horizontal
            for trees, width, offset in ((veins, 4.0, 0.12), (arteries, 2.9, -0.12)):
                w = width * (1.0 if temporal else 0.75) * rng.uniform(0.9, 1.1)
                start = eye.disc + eye.disc_r * 0.3 * np.array([np.cos(heading), np.sin(heading)])
                trees += grow_tree(
                    rng,
                    start,
                    heading + offset,
                    w,
                    eye.inside,
                    turn=turn,
                    wiggle=0.05,
                    branch_p=0.022,
                    taper=0.997,
                    max_steps=420,
                    depth=3,
                )
    return arteries, veins


def _render(rng, eye: _Retina, arteries, veins, masks) -> tuple[np.ndarray, np.ndarray]:
    """The RGB image (3, W, H) in [0, 1] and the tissue label map."""
    shape = (SIZE, SIZE)
    pigment = rng.uniform(0.75, 1.05)
    base = np.array([0.82, 0.36 * pigment, 0.13 * pigment], np.float32)
    choroid = 0.05 * _noise(rng, shape, 5.0) + 0.025 * _noise(rng, shape, 1.2)
    img = base[:, None, None] * (1.0 + choroid)[None]
    d_fovea = eye.dist(eye.fovea)
    macula = 0.38 * np.exp(-(d_fovea**2) / (2 * (1.8 * eye.disc_r) ** 2))
    img *= (1.0 - macula)[None]
    d_disc = np.hypot(
        (eye.x - eye.disc[0]) / eye.disc_r, (eye.y - eye.disc[1]) / (eye.disc_r * 1.1)
    )
    cup = rng.uniform(0.3, 0.55)
    for colour, edge, soft in (((1.0, 0.78, 0.55), 1.0, 0.08), ((1.0, 0.93, 0.8), cup, 0.1)):
        a = np.clip((edge - d_disc) / soft, 0.0, 1.0)[None]
        img = img * (1 - a) + np.asarray(colour, np.float32)[:, None, None] * a
    for trees, colour in ((veins, (0.45, 0.07, 0.06)), (arteries, (0.66, 0.15, 0.09))):
        cover, depth = render_lines(shape, trees)
        tint = np.asarray(colour, np.float32)[:, None, None] * (0.85 + 0.15 * np.clip(depth, 0, 1))
        img = img * (1 - cover[None]) + tint * cover[None]
    vessels = render_lines(shape, veins + arteries)[0] >= 0.5
    for name, m in masks.items():
        colour = np.asarray(_COLOURS[name], np.float32)[:, None, None]
        if name == "drusen":  # soft-edged, semi-transparent
            a = 0.75 * np.clip(ndimage.gaussian_filter(m.astype(np.float32), 1.0) * 1.6, 0, 1)
        else:
            a = m.astype(np.float32)
        img = img * (1 - a[None]) + colour * a[None]
    reflex = np.clip(1.5 - d_fovea, 0, 1) * 0.25  # the foveal light reflex
    img = img + reflex[None]
    r = eye.dist(eye.center) / eye.radius
    light = 1.0 - 0.45 * r**2.2 + 0.06 * ((eye.x - 128) / 128 * rng.uniform(-1, 1))
    img = ndimage.gaussian_filter(img * light[None], (0, 0.6, 0.6))
    img = img + rng.normal(0, 0.012, img.shape).astype(np.float32)
    fov = np.clip(eye.radius - eye.dist(eye.center) + 0.5, 0, 1)
    img = img * fov[None]
    lab = np.zeros(shape, np.uint8)
    lab[fov > 0.5] = TISSUES["retina"]
    lab[d_fovea < 1.5 * eye.disc_r] = TISSUES["macula"]
    lab[vessels] = TISSUES["vessels"]
    lab[d_disc <= 1.0] = TISSUES["optic_disc"]
    lab[d_disc <= cup] = TISSUES["optic_cup"]
    return np.clip(img, 0, 1), lab


def make_fundus_case(seed: int) -> PhantomCase:
    """Builds the fundus phantom of one seed.

    Args:
        seed: Any integer >= 0; the same seed always gives the same case.

    Returns:
        A `PhantomCase` with a ``(3, 256, 256)`` uint8 RGB image, the lesion label map, the
        five findings of `FINDINGS` and ``grade`` = the ICDR diabetic-retinopathy grade 0-4.
    """
    rng = rng_for("fundus", seed)
    eye = _Retina(rng)
    grade = int(rng.integers(0, 5))
    sev = _severities(rng, grade)
    arteries, veins = _vessels(rng, eye)
    masks, where = _lesions(rng, eye, sev)
    image, lab = _render(rng, eye, arteries, veins, masks)
    empty = f"fundus seed {seed}: no room for {{name}}"
    label, findings = label_findings(FINDINGS, masks, sev, where, (SIZE, SIZE), SPACING, empty)
    structures = {
        "optic disc": mask_box(np.isin(lab, (TISSUES["optic_disc"], TISSUES["optic_cup"]))),
        "macula": mask_box(eye.dist(eye.fovea) < 1.5 * eye.disc_r),
    }
    return PhantomCase(
        case_id=f"fundus-{seed:06d}",
        seed=seed,
        anatomy="fundus",
        modality="fundus",
        image=(image * 255 + 0.5).astype(np.uint8),
        spacing=SPACING,
        mask=label,
        findings=findings,
        anatomy_mask=lab,
        anatomy_labels=dict(TISSUES),
        structures=structures,
        grade=grade,
        laterality="right" if eye.side > 0 else "left",
        description="macula-centred 45-degree colour fundus photograph",
    )

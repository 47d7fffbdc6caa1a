"""Chest X-ray phantom: a 2D posteroanterior radiograph built from projected attenuation.

The image is ``(1, W, H)`` uint16 with 12 stored bits, MONOCHROME2 (bright = attenuating), and
x = axis 0 left to right as displayed: the patient's right is on the image left, as in every PA
film. Each structure adds to a line-integral of attenuation ``mu``; the detector shows
``1 - exp(-mu)``. Lungs (with dome-shaped diaphragm, sharp costophrenic angles and branching
vascular markings from the hila), heart, mediastinum, trachea and bronchi, vertebrae, posterior
and anterior ribs with cortical edges, and clavicles vary in size and position per seed.

Findings (graded 0-3, labelled in ``PhantomCase.mask``):

1. ``nodule``: a round opacity in one lung zone; diameter by grade (about 10, 17, 27 mm).
2. ``pleural_effusion``: fluid filling one costophrenic angle upwards with a meniscus; height
   by grade (blunting, mid-zone, large).
3. ``cardiomegaly``: the heart silhouette; cardiothoracic ratio 0.53-0.55 / 0.58-0.60 /
   0.63-0.68 for grades 1-3 (below 0.47 when absent).
4. ``pneumothorax``: an apical-lateral rim without lung markings behind a visceral pleural
   line; rim depth by grade.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medvl.scans.phantoms.case import (
    PhantomCase,
    blob,
    label_findings,
    mask_box,
    rng_for,
    smooth_noise,
)
from medvl.scans.phantoms.draw import grow_tree, polyline, render_lines

SIZE = 256
SPACING = (1.4, 1.4)
FINDINGS = ("nodule", "pleural_effusion", "cardiomegaly", "pneumothorax")
TISSUES = {"body": 1, "right_lung": 2, "left_lung": 3, "heart": 4, "mediastinum": 5}
NODULE_ZONES = ("right upper zone", "right lower zone", "left upper zone", "left lower zone")
_CTR = {0: (0.38, 0.47), 1: (0.53, 0.55), 2: (0.58, 0.60), 3: (0.63, 0.68)}
_SIDES = {"right": -1.0, "left": 1.0}  # patient side -> direction along x on a PA film

DIFFICULTIES = {"easiest": (3.0, 0.3), "easy": (2.0, 0.6), "realistic": (1.0, 1.0)}
"""Level -> (nodule scale, anatomy contrast). Below ``realistic`` the nodule's radius grows by
the scale, the anatomy's brightness is multiplied by the contrast and each present finding is
painted white (black for a pneumothorax) over it. The random-init small
models read none of the realistic findings; the ladder is what they can learn first
(docs/learning.md: at ``easiest`` a nodule's presence is learned above chance, at realistic not).
"""


def _grade(rng: np.random.Generator) -> int:
    return 0 if rng.random() < 0.5 else int(rng.integers(1, 4))


class _Thorax:
    """Geometry of one chest: lung fields, domes, heart, in pixel coordinates."""

    def __init__(self, rng: np.random.Generator, ctr: float):
        self.x = np.arange(SIZE, dtype=np.float32)[:, None]
        self.y = np.arange(SIZE, dtype=np.float32)[None, :]
        x, y = self.x, self.y
        self.cx = 128 + rng.uniform(-5, 5)
        s = rng.uniform(0.9, 1.04)
        half = 28 + 87 * s * np.clip((y - 8) / 40, 0, 1) ** 0.6  # neck widening to shoulders
        self.body = np.abs(x - self.cx) < half + 3 * smooth_noise(rng, (1, SIZE), (0, 8))
        self.hilum_y = rng.uniform(100, 112)
        self.ellipse, self.field, self.dome = {}, {}, {}
        for side, sign in _SIDES.items():
            xk, a = self.cx + sign * 52 * s, 47 * s
            yb = rng.uniform(210, 222) - (6 if side == "right" else 0)  # the liver lifts the right
            yc, b = yb - 66, 122 + rng.uniform(-6, 6)
            dome_h = rng.uniform(16, 26)
            self.dome[side] = yb - dome_h * np.clip(1 - ((x - xk) / a) ** 2, 0, 1)
            self.ellipse[side] = (((x - xk) / a) ** 2 + ((y - yc) / b) ** 2 <= 1) & (y > 20)
            medial = 15 + 5 * np.clip((y - 60) / 80, 0, 1)
            self.field[side] = (
                self.ellipse[side] & (y < self.dome[side]) & (sign * (x - self.cx) > medial)
            )
        lungs = self.ellipse["right"] | self.ellipse["left"]
        cols = np.flatnonzero(lungs.any(axis=1))
        self.thoracic_width = float(cols[-1] + 1 - cols[0])
        width = ctr * self.thoracic_width
        hx, hw = self.cx + 0.18 * width, width / 2
        hh = 0.4 * width + rng.uniform(-4, 4)
        base = float(self.dome["left"][int(np.clip(hx, 0, SIZE - 1)), 0])
        hy = min(base - 0.5 * hh, 200.0)
        self.heart = (((x - hx) / hw) ** 2 + ((y - hy) / hh) ** 2 <= 1) & (y < base + 4)
        for side in _SIDES:
            self.field[side] &= ~self.heart

    def lung(self, side: str) -> np.ndarray:
        return self.field[side]

    def ctr(self) -> float:
        """Cardiothoracic ratio measured on the heart mask (as a radiologist would)."""
        cols = np.flatnonzero(self.heart.any(axis=1))
        return float(cols[-1] + 1 - cols[0]) / self.thoracic_width


def _bones(rng, t: _Thorax) -> np.ndarray:
    """Attenuation of ribs, clavicles and vertebrae."""
    shape = (SIZE, SIZE)
    posterior, anterior = [], []
    for sign in _SIDES.values():
        for i in range(10):
            y0 = 34 + i * rng.uniform(14.5, 15.5)
            rows = np.flatnonzero(t.body[:, int(min(y0 + 20, SIZE - 1))])
            lat = abs((rows[0] if sign < 0 else rows[-1]) - t.cx) - 6
            ts = np.linspace(0, 1, 12)
            # A posterior rib rises slightly from the spine, then arcs down at the chest wall.
            pts = [(t.cx + sign * (13 + u * (lat - 13)), y0 - 10 * u + 40 * u**3) for u in ts]
            posterior.append(polyline(pts, rng.uniform(5.5, 7.5)))
            end = pts[-1]
            anterior.append(polyline([end, (t.cx + sign * 34, end[1] + 40)], rng.uniform(5, 6)))
    cover_p, depth_p = render_lines(shape, posterior)
    cover_a, depth_a = render_lines(shape, anterior)
    cortex = lambda c, d: c * np.clip((d - 0.55) / 0.45, 0, 1)  # noqa: E731  bright rims
    mu = (
        0.16 * cover_p
        + 0.12 * cortex(cover_p, depth_p)
        + 0.09 * cover_a
        + 0.06 * cortex(cover_a, depth_a)
    )
    clavicles = [
        polyline(
            [(t.cx + s * 12, 56), (t.cx + s * 50, 46), (t.cx + s * 98, 34)], rng.uniform(9, 11)
        )
        for s in _SIDES.values()
    ]
    mu += 0.3 * render_lines(shape, clavicles)[0]
    # Vertebral bodies: blocks with darker disc spaces, seen through the mediastinum.
    period = rng.uniform(14, 16)
    in_body = (np.mod(t.y - rng.uniform(0, period), period) > 3).astype(np.float32)
    spine = (np.abs(t.x - t.cx) < 10) * (0.25 + 0.2 * in_body)
    pedicles = (np.abs(np.abs(t.x - t.cx) - 8) < 2.2) * in_body
    return mu + spine + 0.1 * pedicles


def _markings(rng, t: _Thorax) -> np.ndarray:
    """Branching pulmonary vessels fanning out from each hilum."""
    trees = []
    for side, sign in _SIDES.items():
        field = t.lung(side)
        inside = lambda x, y, f=field: 0 <= x < SIZE and 0 <= y < SIZE and f[int(x), int(y)]  # noqa: E731
        hilum = (t.cx + sign * 30, t.hilum_y + 10)
        for angle in np.linspace(-1.2, 1.2, 6):
            heading = (0.0 if sign > 0 else np.pi) - sign * angle
            start = (hilum[0] + sign * 6 * np.cos(angle), hilum[1] - 6 * np.sin(angle))
            width = rng.uniform(2.2, 3.2)
            trees += grow_tree(
                rng,
                start,
                heading,
                width,
                inside,
                wiggle=0.06,
                branch_p=0.04,
                taper=0.993,
                min_width=0.7,
                max_steps=300,
            )
    return render_lines((SIZE, SIZE), trees)[0]


def _findings(rng, t: _Thorax, grades: dict[str, int], scale: float = 1.0) -> tuple[dict, dict]:
    """Masks and locations of the lung and pleural findings (cardiomegaly is the heart)."""
    masks: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    x, y = t.x, t.y
    if g := grades["pneumothorax"]:
        side = str(rng.choice(list(_SIDES)))
        rim = (5.0, 12.0, 22.0)[g - 1] * rng.uniform(0.9, 1.1)
        wall = ndimage.distance_transform_edt(t.ellipse[side])  # distance to the chest wall
        masks["pneumothorax"] = t.lung(side) & (wall < rim) & (y < t.hilum_y + 25)
        where["pneumothorax"] = f"{side} apex"
    if g := grades["pleural_effusion"]:
        side = str(rng.choice(list(_SIDES)))
        lung = t.lung(side)
        height = (10.0, 30.0, 60.0)[g - 1] * rng.uniform(0.9, 1.1)
        lowest = np.flatnonzero(lung.any(axis=0))[-1]
        edge = np.flatnonzero(lung.any(axis=1))
        lateral = np.clip((np.abs(x - t.cx) - 20) / (max(abs(edge[[0, -1]] - t.cx)) - 20), 0, 1)
        surface = lowest - height - 0.35 * height * lateral**2  # meniscus: higher laterally
        masks["pleural_effusion"] = lung & (y >= surface)
        if "pneumothorax" in masks:
            masks["pleural_effusion"] &= ~masks["pneumothorax"]
        where["pleural_effusion"] = f"{side} pleural space"
    if g := grades["nodule"]:
        side = str(rng.choice(list(_SIDES)))
        zone = str(rng.choice(["upper", "lower"]))
        r = (3.5, 6.0, 9.5)[g - 1] * scale * rng.uniform(0.9, 1.1)
        free = t.lung(side).copy()
        for m in masks.values():
            free &= ~ndimage.binary_dilation(m, iterations=3)
        free &= (y < t.hilum_y) if zone == "upper" else (y >= t.hilum_y)
        room = ndimage.distance_transform_edt(free)
        ok = np.argwhere(room >= min(r + 2, room.max()))
        cx, cy = ok[rng.integers(len(ok))]
        masks["nodule"] = blob(rng, (x, y), (cx, cy), (r, r), roughness=0.12) & t.lung(side)
        where["nodule"] = f"{side} {zone} zone"
    if grades["cardiomegaly"]:
        masks["cardiomegaly"] = t.heart.copy()
        where["cardiomegaly"] = "heart"
    return masks, where


def _render(rng, t: _Thorax, masks: dict[str, np.ndarray]) -> np.ndarray:
    """The radiograph in [0, 1]: 1 - exp(-projected attenuation), blurred and noisy."""
    x, y = t.x, t.y
    mu = np.where(t.body, 1.1 + 0.05 * smooth_noise(rng, (SIZE, SIZE), 12), 0.0)
    abdomen = t.body & (y > np.minimum(t.dome["right"], t.dome["left"])) & (y > 150)
    mu = np.where(abdomen, 1.3, mu)
    bubble = ((x - t.cx - 45) / 16) ** 2 + ((y - t.dome["left"] - 12) / 9) ** 2 <= 1
    mu = np.where(bubble & abdomen, 0.8, mu)  # gastric air under the left dome
    markings = _markings(rng, t)
    ptx = masks.get("pneumothorax", np.zeros((SIZE, SIZE), bool))
    for side in _SIDES:
        lung = t.lung(side)
        mu = np.where(lung, 0.36 + 0.03 * smooth_noise(rng, (SIZE, SIZE), 3) + 0.12 * markings, mu)
    mu = np.where(t.heart, 1.25, mu)
    mediastinum = t.body & (np.abs(x - t.cx) < 17) & (y < 175)
    mu = np.where(mediastinum & ~t.heart, np.maximum(mu, 1.2), mu)
    airway = render_lines(
        (SIZE, SIZE),
        [
            polyline([(t.cx, 0), (t.cx, t.hilum_y - 8)], 9),
            polyline([(t.cx, t.hilum_y - 8), (t.cx - 26, t.hilum_y + 12)], 6),
            polyline([(t.cx, t.hilum_y - 8), (t.cx + 26, t.hilum_y + 16)], 6),
        ],
    )[0]
    mu = np.maximum(mu - 0.35 * airway * t.body, 0.0)
    if ptx.any():
        mu = np.where(ptx, 0.22, mu)
        line = (~ptx) & ndimage.binary_dilation(ptx) & (mu < 0.7)
        mu = np.where(line, mu + 0.18, mu)  # the visceral pleural line
    if "pleural_effusion" in masks:
        m = masks["pleural_effusion"]
        mu = np.where(
            m, 1.05 + 0.15 * np.clip((y - y[0, np.flatnonzero(m.any(0))[0]]) / 40, 0, 1), mu
        )
    if "nodule" in masks:
        soft = ndimage.gaussian_filter(masks["nodule"].astype(np.float32), 1.0)
        mu = mu + 0.6 * soft
    mu = mu + _bones(rng, t) * t.body
    img = 1.0 - np.exp(-np.maximum(mu, 0.0) * rng.uniform(0.95, 1.1))
    img = ndimage.gaussian_filter(img, 0.7) ** rng.uniform(0.85, 1.1)
    heel = 1.0 + rng.uniform(-0.05, 0.05) * (y - 128) / 128  # anode heel: exposure falls off
    return np.clip(img * heel + rng.normal(0, 0.01, img.shape), 0.0, 1.0)


def make_chest_case(seed: int, difficulty: str = "realistic") -> PhantomCase:
    """Builds the chest X-ray phantom of one seed.

    Args:
        seed: Any integer >= 0; the same seed always gives the same case.
        difficulty: A level of `DIFFICULTIES`; the grades and sides drawn do not depend on it.

    Returns:
        A `PhantomCase` with a ``(1, 256, 256)`` uint16 image (12 stored bits, 1.4 mm pixels),
        the finding label map and the four findings of `FINDINGS`.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {list(DIFFICULTIES)}, got {difficulty!r}")
    scale, contrast = DIFFICULTIES[difficulty]
    rng = rng_for("chest", seed)
    grades = {name: _grade(rng) for name in FINDINGS}
    ctr = rng.uniform(*_CTR[grades["cardiomegaly"]])
    t = _Thorax(rng, ctr)
    masks, where = _findings(rng, t, grades, scale)
    image = _render(rng, t, masks)
    if difficulty != "realistic":
        image = image * contrast
        for name, mask in masks.items():
            image[mask] = 0.0 if name == "pneumothorax" else 1.0
    empty = f"chest seed {seed}: {{name}} of grade {{grade}} is empty"
    label, findings = label_findings(FINDINGS, masks, grades, where, (SIZE, SIZE), SPACING, empty)
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[t.body] = TISSUES["body"]
    lab[(np.abs(t.x - t.cx) < 17) & t.body & (t.y < 175)] = TISSUES["mediastinum"]
    lab[t.lung("right")] = TISSUES["right_lung"]
    lab[t.lung("left")] = TISSUES["left_lung"]
    lab[t.heart] = TISSUES["heart"]
    structures = {
        "heart": mask_box(t.heart),
        "right lung": mask_box(t.lung("right")),
        "left lung": mask_box(t.lung("left")),
    }
    return PhantomCase(
        case_id=f"chest-{seed:06d}",
        seed=seed,
        anatomy="chest",
        modality="X-ray",
        image=np.rint(image * 4095).astype(np.uint16)[None],
        spacing=SPACING,
        mask=label,
        findings=findings,
        anatomy_mask=lab,
        anatomy_labels=dict(TISSUES),
        structures=structures,
        description="posteroanterior chest radiograph",
        measurements={"cardiothoracic_ratio": round(t.ctr(), 3)},
    )

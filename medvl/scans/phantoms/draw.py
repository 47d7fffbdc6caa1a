"""2D drawing helpers shared by the fundus and chest phantoms: branching trees and thick lines.

Lines are rasterised through a distance transform rather than pixel stamping, so edges are
anti-aliased (partial-pixel coverage) and the cost does not grow with the number of segments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

# A polyline is an (n, 3) array of points: x, y and the line width at that point, in pixels.
Polyline = np.ndarray


def grow_tree(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    width: float,
    inside: Callable[[float, float], bool],
    *,
    turn: float = 0.0,
    wiggle: float = 0.08,
    branch_p: float = 0.03,
    branch_angle: tuple[float, float] = (0.4, 0.9),
    taper: float = 0.996,
    min_width: float = 0.8,
    max_steps: int = 400,
    depth: int = 3,
    step: float = 0.7,
) -> list[Polyline]:
    """Grows a branching vessel (or airway) tree by a persistent random walk.

    Args:
        rng: Random stream.
        start: ``(x, y)`` of the root, in pixels.
        heading: Initial direction in radians (0 = +x, pi/2 = +y, i.e. down the image).
        width: Root width in pixels; it tapers by ``taper`` per step and splits at branches.
        inside: Keeps growing only while ``inside(x, y)`` is True (e.g. the field of view).
        turn: Constant curvature in radians per step (how retinal arcades bend).
        wiggle: Standard deviation of the random heading change per step (tortuosity).
        branch_p: Probability per step of a side branch.
        branch_angle: Range of a side branch's angle to its parent, radians.
        taper: Width factor per step.
        min_width: A branch stops when thinner than this.
        max_steps: Length limit of one branch, in steps.
        depth: How many generations of side branches may still sprout.
        step: Step length in pixels; below 1 so the rasterised centreline has no gaps.

    Returns:
        The branches as polylines, the root branch first.
    """
    x, y, w, h = float(start[0]), float(start[1]), float(width), float(heading)
    points = []
    children: list[Polyline] = []
    for _ in range(max_steps):
        if w < min_width or not inside(x, y):
            break
        points.append((x, y, w))
        if depth > 0 and len(points) > 8 and rng.random() < branch_p:
            side = rng.choice((-1.0, 1.0))
            angle = h + side * rng.uniform(*branch_angle)
            children += grow_tree(
                rng,
                (x, y),
                angle,
                w * rng.uniform(0.55, 0.8),
                inside,
                turn=turn * side,
                wiggle=wiggle,
                branch_p=branch_p,
                branch_angle=branch_angle,
                taper=taper,
                min_width=min_width,
                max_steps=max_steps // 2,
                depth=depth - 1,
                step=step,
            )
            w *= 0.9  # a parent loses calibre where it gives off a branch (Murray's law, loosely)
        h += turn + rng.normal(0.0, wiggle)
        x, y, w = x + step * np.cos(h), y + step * np.sin(h), w * taper
    trunk = [np.asarray(points, dtype=np.float32).reshape(-1, 3)]
    return [p for p in trunk + children if len(p)]


def polyline(points: list[tuple[float, float]], width: float, step: float = 0.5) -> Polyline:
    """A constant-width polyline through ``points`` (x, y), resampled every ``step`` pixels."""
    out = []
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        n = max(2, int(np.hypot(x1 - x0, y1 - y0) / step) + 1)
        t = np.linspace(0.0, 1.0, n)
        out.append(np.stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0), np.full(n, width)], 1))
    return np.concatenate(out).astype(np.float32)


def render_lines(
    shape: tuple[int, int], lines: list[Polyline], bin_width: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises thick polylines on a ``(W, H)`` grid (x = axis 0, y = axis 1).

    Args:
        shape: ``(W, H)`` of the output.
        lines: Polylines of (x, y, width) points.
        bin_width: Widths are grouped into bins this wide; one distance transform per bin.

    Returns:
        ``coverage`` in [0, 1] (the fraction of each pixel the lines cover) and ``depth``, the
        distance to the nearest centreline divided by that line's half width (0 on the
        centreline, 1 at the edge, inf far away) for shading tubes and rib cortices.
    """
    coverage = np.zeros(shape, np.float32)
    depth = np.full(shape, np.inf, np.float32)
    if not lines:
        return coverage, depth
    pts = np.concatenate(lines)
    ix = np.clip(np.rint(pts[:, 0]).astype(int), 0, shape[0] - 1)
    iy = np.clip(np.rint(pts[:, 1]).astype(int), 0, shape[1] - 1)
    bins = np.maximum(np.rint(pts[:, 2] / bin_width).astype(int), 1)
    for b in np.unique(bins):
        seeds = np.ones(shape, bool)
        seeds[ix[bins == b], iy[bins == b]] = False
        dist = ndimage.distance_transform_edt(seeds).astype(np.float32)
        half = b * bin_width / 2.0
        coverage = np.maximum(coverage, np.clip(half + 0.5 - dist, 0.0, 1.0))
        depth = np.minimum(depth, dist / half)
    return coverage, depth

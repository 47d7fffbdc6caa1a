"""The coordinate map of one displayed plane: voxels <-> display pixels, boxes both ways.

A view shows planes of a volume that contain two array axes, ``h_axis`` (drawn across) and
``v_axis`` (drawn down), and stand at an index of the third, ``axis``. Display orientation flips
the two in-plane axes; physical aspect ratio rescales them. Neither changes the map in normalised
coordinates beyond ``t -> 1 - t`` for a flipped axis, because the whole plane is resized onto the
whole display (pixel edges on pixel edges, as PIL's resize does)::

      array axis h (length n)        display x (width W pixels)
      0    1    2  ...  n            flip_h = False: x / W = i / n
      |----|----|- ... -|            flip_h = True:  x / W = 1 - i / n
      0 ----------------W            voxel i spans x in [i, i+1] * W / n (or mirrored)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Orientation = Literal["radiological", "neurological", "array"]

# Per RAS array axis: does the display run against it (index grows leftwards / upwards)?
FLIPS: dict[str, tuple[bool, bool, bool]] = {
    "radiological": (True, True, True),
    "neurological": (False, True, True),
    "array": (False, False, False),
}
_TOWARDS = ("R", "A", "S")  # the patient direction each RAS array axis grows towards
_AWAY = ("L", "P", "I")
# Float slack when snapping normalised edges to voxels: 0.3 * 10 must be voxel edge 3.
_TOL = 1e-9


def _check_box(box: Sequence[float], dims: int) -> np.ndarray:
    """A normalised box as floats ``[lo..., hi...]``, clipped into [0, 1]; raises if malformed."""
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (2 * dims,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"expected a normalised {dims}D box of {2 * dims} numbers, got {box!r}")
    lo, hi = arr[:dims], arr[dims:]
    if np.any(lo < -1e-6) or np.any(hi > 1 + 1e-6) or np.any(lo > hi + 1e-9):
        raise ValueError(f"box {list(arr)} is not in [0, 1] with lower corner first")
    return np.clip(arr, 0.0, 1.0)


def check_box3d(box: Sequence[float]) -> np.ndarray:
    """Validate a normalised 3D box ``[x1, y1, z1, x2, y2, z2]``."""
    return _check_box(box, 3)


def check_box2d(box: Sequence[float]) -> np.ndarray:
    """Validate a normalised 2D box ``[x1, y1, x2, y2]``."""
    return _check_box(box, 2)


def union2d(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest normalised 2D box holding all ``boxes``."""
    arr = np.stack([check_box2d(b) for b in boxes])
    return [*arr[:, :2].min(axis=0).tolist(), *arr[:, 2:].max(axis=0).tolist()]


def covered(lo: float, hi: float, n: int) -> tuple[int, int]:
    """First and last voxel index along an axis of length ``n`` that ``[lo, hi]`` overlaps.

    A box edge lying on a voxel edge does not claim the voxel beyond it; a zero-thickness box
    claims the voxel it lies in.
    """
    first = min(n - 1, max(0, math.floor(lo * n + _TOL)))
    last = min(n - 1, max(first, math.ceil(hi * n - _TOL) - 1))
    return first, last


def _mirror(lo: float, hi: float, flip: bool) -> tuple[float, float]:
    # Self-inverse, so the same call maps array -> display and display -> array.
    return (1.0 - hi, 1.0 - lo) if flip else (lo, hi)


def display_size(n_h: int, n_v: int, s_h: float, s_v: float, size: int | None) -> tuple[int, int]:
    """Display ``(width, height)`` of a plane ``n_h x n_v`` voxels of ``s_h x s_v`` mm.

    Without ``size`` the pixel pitch is the finer spacing, so no in-plane detail is lost; with it
    the longer side is ``size`` pixels. Either way a pixel is square in millimetres, up to the
    rounding of each side to whole pixels.
    """
    extent_h, extent_v = n_h * s_h, n_v * s_v
    scale = 1.0 / min(s_h, s_v) if size is None else size / max(extent_h, extent_v)
    return max(1, round(extent_h * scale)), max(1, round(extent_v * scale))


@dataclass(frozen=True)
class PlaneMap:
    """How every displayed plane along one axis of a volume maps to the volume's voxels.

    Attributes:
        shape: the volume's spatial shape ``(X, Y, Z)``.
        axis: the through-plane axis; a plane shows one index (or a slab) along it.
        width: display width in pixels.
        height: display height in pixels.
        flip_h: display x runs against ``h_axis`` (its index grows leftwards).
        flip_v: display y runs against ``v_axis`` (its index grows upwards).
    """

    shape: tuple[int, int, int]
    axis: int
    width: int
    height: int
    flip_h: bool
    flip_v: bool

    @classmethod
    def build(
        cls,
        shape: Sequence[int],
        axis: int,
        spacing: Sequence[float],
        size: int | None = None,
        orientation: Orientation = "radiological",
    ) -> PlaneMap:
        """The map for planes along ``axis`` of a volume, shown at its physical aspect ratio."""
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        if orientation not in FLIPS:
            raise ValueError(f"orientation must be one of {sorted(FLIPS)}, got {orientation!r}")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        h, v = [a for a in (0, 1, 2) if a != axis]
        width, height = display_size(shape[h], shape[v], spacing[h], spacing[v], size)
        flips = FLIPS[orientation]
        return cls(
            (int(shape[0]), int(shape[1]), int(shape[2])), axis, width, height, flips[h], flips[v]
        )

    @property
    def h_axis(self) -> int:
        """The array axis drawn across the display (the lower of the two in-plane axes)."""
        return 1 if self.axis == 0 else 0

    @property
    def v_axis(self) -> int:
        """The array axis drawn down the display (the higher of the two in-plane axes)."""
        return 1 if self.axis == 2 else 2

    @property
    def n_slices(self) -> int:
        """How many planes the volume has along ``axis``."""
        return self.shape[self.axis]

    @property
    def edges(self) -> dict[str, str]:
        """Patient direction at each display edge, for a RAS volume, e.g. ``{"left": "R", ...}``."""
        h, v = self.h_axis, self.v_axis
        return {
            "left": _TOWARDS[h] if self.flip_h else _AWAY[h],
            "right": _AWAY[h] if self.flip_h else _TOWARDS[h],
            "top": _TOWARDS[v] if self.flip_v else _AWAY[v],
            "bottom": _AWAY[v] if self.flip_v else _TOWARDS[v],
        }

    def slices(self, box: Sequence[float]) -> tuple[int, int]:
        """First and last index along ``axis`` that a normalised 3D box overlaps."""
        b = check_box3d(box)
        return covered(b[self.axis], b[self.axis + 3], self.n_slices)

    def span(self, first: int, last: int) -> tuple[float, float]:
        """Normalised through-plane extent of the planes ``first..last`` (inclusive)."""
        return first / self.n_slices, (last + 1) / self.n_slices

    def project(self, box: Sequence[float]) -> list[float]:
        """A normalised 3D box -> its in-plane extent as a display box ``[x1, y1, x2, y2]`` (unit).

        The through-plane extent is dropped; ``slices`` says which planes the box crosses.
        """
        b = check_box3d(box)
        x1, x2 = _mirror(b[self.h_axis], b[self.h_axis + 3], self.flip_h)
        y1, y2 = _mirror(b[self.v_axis], b[self.v_axis + 3], self.flip_v)
        return [float(x1), float(y1), float(x2), float(y2)]

    def unproject(self, box: Sequence[float], through: tuple[float, float]) -> list[float]:
        """A normalised display box and a through-plane extent -> the normalised 3D box."""
        b = check_box2d(box)
        lo, hi = [0.0] * 3, [0.0] * 3
        lo[self.h_axis], hi[self.h_axis] = _mirror(b[0], b[2], self.flip_h)
        lo[self.v_axis], hi[self.v_axis] = _mirror(b[1], b[3], self.flip_v)
        lo[self.axis], hi[self.axis] = through
        return [float(c) for c in (*lo, *hi)]

    def voxel_at(self, x: float, y: float, index: int) -> tuple[int, int, int]:
        """The voxel ``(i, j, k)`` under display point ``(x, y)`` of the plane at ``index``.

        ``(x, y)`` are continuous pixel coordinates: pixel ``(c, r)`` spans ``[c, c+1] x [r, r+1]``,
        so its centre is ``(c + 0.5, r + 0.5)``. Points outside the display are clamped onto it.
        """
        voxel = [0, 0, 0]
        voxel[self.h_axis] = _index(x / self.width, self.shape[self.h_axis], self.flip_h)
        voxel[self.v_axis] = _index(y / self.height, self.shape[self.v_axis], self.flip_v)
        voxel[self.axis] = int(index)
        return voxel[0], voxel[1], voxel[2]

    def pixel_of(self, voxel: Sequence[int]) -> tuple[float, float]:
        """Display point ``(x, y)`` at the centre of a voxel's in-plane footprint."""
        x = _centre(int(voxel[self.h_axis]), self.shape[self.h_axis], self.flip_h)
        y = _centre(int(voxel[self.v_axis]), self.shape[self.v_axis], self.flip_v)
        return x * self.width, y * self.height


def _index(t: float, n: int, flip: bool) -> int:
    # Count voxels from the display's own start, so a pixel edge falls in the voxel drawn after it
    # whichever way the axis runs.
    shown = min(n - 1, max(0, math.floor(t * n + _TOL)))
    return n - 1 - shown if flip else shown


def _centre(i: int, n: int, flip: bool) -> float:
    shown = n - 1 - i if flip else i
    return (shown + 0.5) / n

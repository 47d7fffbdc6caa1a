"""Views made of one picture: a single slice, or a maximum-intensity projection of a slab."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medvl.scans.views.coords import Orientation, PlaneMap
from medvl.scans.views.render import Resample, prepare, render_plane

Box = list[float]


class _Planar:
    """Maps shared by one-picture views of the slab ``first..last`` along ``plane.axis``."""

    image: Image.Image
    plane: PlaneMap

    @property
    def _slab(self) -> tuple[int, int]:
        raise NotImplementedError

    def _depth(self, voxel: tuple[int, int, int]) -> int:
        raise NotImplementedError

    @property
    def axis(self) -> int:
        """The spatial axis the picture looks along."""
        return self.plane.axis

    def image_box(self, box: Sequence[float]) -> Box | None:
        """A normalised 3D box -> its normalised box ``[x1, y1, x2, y2]`` on the picture.

        None if the box misses the shown slab, so a lesion is never drawn where it is not.
        """
        first, last = self.plane.slices(box)
        lo, hi = self._slab
        return self.plane.project(box) if first <= hi and last >= lo else None

    def box_from_image(self, box: Sequence[float]) -> Box:
        """A normalised picture box -> the 3D box it covers, through-plane the whole shown slab."""
        return self.plane.unproject(box, self.plane.span(*self._slab))

    def voxel_at(self, x: float, y: float) -> tuple[int, int, int]:
        """The voxel shown at pixel coordinates ``(x, y)`` (pixel centres at +0.5)."""
        voxel = self.plane.voxel_at(x, y, 0)
        return self.plane.voxel_at(x, y, self._depth(voxel))

    def locate(self, voxel: Sequence[int]) -> tuple[float, float] | None:
        """``(x, y)`` of a voxel's centre on the picture, or None if it lies outside the slab."""
        lo, hi = self._slab
        return self.plane.pixel_of(voxel) if lo <= int(voxel[self.axis]) <= hi else None


@dataclass
class SliceView(_Planar):
    """One slice of a volume, drawn as a frame of ``volume_to_frames`` would be.

    Attributes:
        image: the slice (RGB).
        slice_index: its index along ``plane.axis``.
        plane: its coordinate map.
    """

    image: Image.Image
    slice_index: int
    plane: PlaneMap

    @property
    def _slab(self) -> tuple[int, int]:
        return self.slice_index, self.slice_index

    def _depth(self, voxel: tuple[int, int, int]) -> int:
        return self.slice_index


@dataclass
class MIPView(_Planar):
    """A maximum-intensity projection along ``plane.axis`` over the slices ``slab[0]..slab[1]``.

    Each pixel shows the brightest voxel of its ray through the slab; ``voxel_at`` returns that
    voxel, so a point picked on the MIP lands on the structure that made it bright.

    Attributes:
        image: the projection (RGB).
        slab: first and last slice projected (inclusive).
        plane: its coordinate map.
        depth: ``(n_h, n_v)`` array, in array order, of the slice index of each ray's maximum.
    """

    image: Image.Image
    slab: tuple[int, int]
    plane: PlaneMap
    depth: np.ndarray

    @property
    def _slab(self) -> tuple[int, int]:
        return self.slab

    def _depth(self, voxel: tuple[int, int, int]) -> int:
        return int(self.depth[voxel[self.plane.h_axis], voxel[self.plane.v_axis]])


def volume_to_slice(
    volume: torch.Tensor | np.ndarray,
    index: int | None = None,
    axis: int = 2,
    *,
    spacing: Sequence[float] | None = None,
    size: int | None = None,
    orientation: Orientation = "radiological",
    resample: Resample = "bilinear",
    window: tuple[float, float] | None = None,
) -> SliceView:
    """One slice of a volume as a picture.

    Args:
        volume: a channel-first volume ``(C, X, Y, Z)``.
        index: the slice along ``axis``; default the middle one.
        axis: the spatial axis the slice is taken across.
        spacing, size, orientation, resample, window: as for ``volume_to_frames``.

    Returns:
        A ``SliceView``.
    """
    _, scaled, pmap = prepare(volume, axis, spacing, size, orientation, window)
    index = pmap.n_slices // 2 if index is None else int(index)
    if not 0 <= index < pmap.n_slices:
        raise ValueError(f"slice index {index} out of range [0, {pmap.n_slices})")
    image = render_plane(np.take(scaled, index, axis=axis + 1), pmap, resample)
    return SliceView(image=image, slice_index=index, plane=pmap)


def volume_to_mip(
    volume: torch.Tensor | np.ndarray,
    axis: int = 2,
    *,
    slab: tuple[int, int] | None = None,
    spacing: Sequence[float] | None = None,
    size: int | None = None,
    orientation: Orientation = "radiological",
    resample: Resample = "bilinear",
    window: tuple[float, float] | None = None,
) -> MIPView:
    """A maximum-intensity projection of a volume (or a slab of it) along an axis.

    Intensities are scaled with the whole volume's window before projecting, so a MIP is as
    bright as the slices it summarises.

    Args:
        volume: a channel-first volume ``(C, X, Y, Z)``.
        axis: the spatial axis projected away.
        slab: first and last slice to project (inclusive); default all.
        spacing, size, orientation, resample, window: as for ``volume_to_frames``.

    Returns:
        A ``MIPView``.
    """
    array, scaled, pmap = prepare(volume, axis, spacing, size, orientation, window)
    first, last = (0, pmap.n_slices - 1) if slab is None else (int(slab[0]), int(slab[1]))
    if not 0 <= first <= last < pmap.n_slices:
        raise ValueError(f"slab {slab} must satisfy 0 <= first <= last < {pmap.n_slices}")
    picked = (slice(None),) * (axis + 1) + (slice(first, last + 1),)
    image = render_plane(scaled[picked].max(axis=axis + 1), pmap, resample)
    # Depth from the raw values (summed over channels), which ties less often than uint8 does.
    depth = array[picked].sum(axis=0).argmax(axis=axis) + first
    return MIPView(image=image, slab=(first, last), plane=pmap, depth=depth)

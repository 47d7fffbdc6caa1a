"""Views made of many slices: video frames and a labelled montage grid."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from medvl.scans.views.coords import Orientation, PlaneMap, check_box2d, union2d
from medvl.scans.views.render import Resample, even_indices, prepare, render_plane

Box = list[float]


class _SliceStack:
    """Maps shared by views that show one slice per frame or tile."""

    slice_indices: list[int]
    plane: PlaneMap

    @property
    def axis(self) -> int:
        """The spatial axis (0, 1 or 2) the slices step along."""
        return self.plane.axis

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels of every frame / tile picture."""
        return self.plane.width, self.plane.height

    def _normalised_boxes(self, box: Sequence[float]) -> dict[int, Box]:
        first, last = self.plane.slices(box)
        shown = self.plane.project(box)
        return {t: list(shown) for t, s in enumerate(self.slice_indices) if first <= s <= last}

    def _box_from(self, boxes: Mapping[int, Sequence[float]]) -> Box:
        if not boxes:
            raise ValueError("need at least one 2D box to recover a 3D box")
        shown = [self.slice_indices[self._check_index(t)] for t in boxes]
        through = self.plane.span(min(shown), max(shown))
        return self.plane.unproject(union2d(list(boxes.values())), through)

    def _check_index(self, t: int) -> int:
        if not 0 <= t < len(self.slice_indices):
            raise IndexError(f"index {t} out of range for {len(self.slice_indices)} slices")
        return int(t)

    def _showing(self, voxel: Sequence[int], nearest: bool) -> int | None:
        k = int(voxel[self.axis])
        gaps = [abs(s - k) for s in self.slice_indices]
        best = int(np.argmin(gaps))
        return best if nearest or gaps[best] == 0 else None


@dataclass
class FrameView(_SliceStack):
    """A volume as video frames, one slice per frame, all the same size.

    Frame boxes are normalised to each frame (medvl convention); see ``medvl.scans.views``.

    Attributes:
        frames: one RGB PIL image per frame.
        slice_indices: the index along ``axis`` of the slice each frame shows.
        plane: the coordinate map shared by all frames (size, orientation).
    """

    frames: list[Image.Image]
    slice_indices: list[int]
    plane: PlaneMap

    def frame_boxes(self, box: Sequence[float]) -> dict[int, Box]:
        """Where a normalised 3D box appears: ``{frame index: [x1, y1, x2, y2]}`` (normalised).

        Only frames whose slice the box overlaps are listed; the in-plane box is the same on each.
        """
        return self._normalised_boxes(box)

    def box_from_frames(self, frame_boxes: Mapping[int, Sequence[float]]) -> Box:
        """The normalised 3D box that per-frame boxes describe.

        In-plane it is the union of the 2D boxes; through-plane it runs from the first edge of the
        lowest shown slice to the far edge of the highest. With fewer frames than slices the
        through-plane extent is only as fine as the frame step.
        """
        return self._box_from(frame_boxes)

    def voxel_at(self, frame: int, x: float, y: float) -> tuple[int, int, int]:
        """The voxel under pixel coordinates ``(x, y)`` of a frame (pixel centres at +0.5)."""
        return self.plane.voxel_at(x, y, self.slice_indices[self._check_index(frame)])

    def locate(
        self, voxel: Sequence[int], nearest: bool = False
    ) -> tuple[int, float, float] | None:
        """``(frame, x, y)`` where a voxel's centre is shown, or None if no frame shows its slice.

        Args:
            voxel: ``(i, j, k)``.
            nearest: use the frame with the nearest slice rather than return None.
        """
        frame = self._showing(voxel, nearest)
        return None if frame is None else (frame, *self.plane.pixel_of(voxel))


@dataclass
class MontageView(_SliceStack):
    """Slices tiled into one image, each tile a label strip over the slice picture::

        +---------+ gap +---------+      tile t sits in column t % columns, row t // columns
        | z=3     |     | z=9     |  <- label strip, label_height pixels (0 without labels)
        +---------+     +---------+
        |  slice  |     |  slice  |  <- picture, plane.width x plane.height, drawn as frames are
        +---------+     +---------+
            gap
        +---------+ ...

    Tile boxes are absolute pixels of ``image``, ``[x1, y1, x2, y2]`` with edges on pixel edges.

    Attributes:
        image: the montage (RGB).
        slice_indices: the slice each tile shows.
        plane: the coordinate map of each tile picture.
        columns: tiles per row.
        gap: pixels between neighbouring tiles.
        label_height: pixels of the label strip above each picture.
    """

    image: Image.Image
    slice_indices: list[int]
    plane: PlaneMap
    columns: int
    gap: int
    label_height: int

    def tile_origin(self, tile: int) -> tuple[int, int]:
        """Pixel ``(x, y)`` of the top-left corner of a tile's picture (below its label)."""
        row, col = divmod(self._check_index(tile), self.columns)
        return (
            col * (self.plane.width + self.gap),
            row * (self.label_height + self.plane.height + self.gap) + self.label_height,
        )

    def tile_at(self, x: float, y: float) -> int | None:
        """The tile whose picture contains montage point ``(x, y)``; None in a gap or label."""
        col = math.floor(x / (self.plane.width + self.gap))
        row = math.floor(y / (self.label_height + self.plane.height + self.gap))
        tile = row * self.columns + col
        if not (0 <= col < self.columns and 0 <= tile < len(self.slice_indices)):
            return None
        x0, y0 = self.tile_origin(tile)
        inside = 0 <= x - x0 <= self.plane.width and 0 <= y - y0 <= self.plane.height
        return tile if inside else None

    def tile_boxes(self, box: Sequence[float]) -> dict[int, Box]:
        """Where a normalised 3D box appears: ``{tile: [x1, y1, x2, y2]}`` in montage pixels."""
        return {t: self._to_pixels(t, b) for t, b in self._normalised_boxes(box).items()}

    def box_from_tiles(
        self, boxes: Mapping[int, Sequence[float]] | Sequence[Sequence[float]]
    ) -> Box:
        """The normalised 3D box that montage pixel boxes describe (inverse of ``tile_boxes``).

        Args:
            boxes: ``{tile: pixel box}``, or bare pixel boxes, each assigned to the tile holding
                its centre (what a model drawing on the montage gives). Parts of a box spilling
                out of its tile are clipped off.

        Raises:
            ValueError: if no boxes are given or a bare box's centre lies in no tile.
        """
        if not isinstance(boxes, Mapping):
            assigned: dict[int, list[Sequence[float]]] = {}
            for b in boxes:
                tile = self.tile_at((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
                if tile is None:
                    raise ValueError(f"box {list(b)} is centred on no tile of the montage")
                assigned.setdefault(tile, []).append(b)
            return self._box_from(
                {t: union2d([self._to_unit(t, b) for b in bs]) for t, bs in assigned.items()}
            )
        return self._box_from({t: self._to_unit(t, b) for t, b in boxes.items()})

    def voxel_at(self, x: float, y: float) -> tuple[int, int, int] | None:
        """The voxel under montage point ``(x, y)``; None in a gap or label strip."""
        tile = self.tile_at(x, y)
        if tile is None:
            return None
        x0, y0 = self.tile_origin(tile)
        return self.plane.voxel_at(x - x0, y - y0, self.slice_indices[tile])

    def locate(
        self, voxel: Sequence[int], nearest: bool = False
    ) -> tuple[int, float, float] | None:
        """``(tile, x, y)`` in montage pixels of a voxel's centre; None if its slice isn't shown."""
        tile = self._showing(voxel, nearest)
        if tile is None:
            return None
        x0, y0 = self.tile_origin(tile)
        x, y = self.plane.pixel_of(voxel)
        return tile, x0 + x, y0 + y

    def _to_pixels(self, tile: int, box: Sequence[float]) -> Box:
        x0, y0 = self.tile_origin(tile)
        w, h = self.size
        return [
            float(x0 + box[0] * w),
            float(y0 + box[1] * h),
            float(x0 + box[2] * w),
            float(y0 + box[3] * h),
        ]

    def _to_unit(self, tile: int, box: Sequence[float]) -> Box:
        x0, y0 = self.tile_origin(tile)
        w, h = self.size
        unit = np.array(
            [(box[0] - x0) / w, (box[1] - y0) / h, (box[2] - x0) / w, (box[3] - y0) / h]
        )
        return check_box2d(np.clip(unit, 0.0, 1.0)).tolist()


def _slices(n_slices: int, count: int, indices: Sequence[int] | None) -> list[int]:
    if indices is None:
        return even_indices(n_slices, count)
    chosen = [int(i) for i in indices]
    if not chosen or any(not 0 <= i < n_slices for i in chosen):
        raise ValueError(f"slice indices must be non-empty and in [0, {n_slices}), got {chosen}")
    return chosen


def volume_to_frames(
    volume: torch.Tensor | np.ndarray,
    n_frames: int = 16,
    axis: int = 2,
    *,
    spacing: Sequence[float] | None = None,
    size: int | None = None,
    orientation: Orientation = "radiological",
    resample: Resample = "bilinear",
    window: tuple[float, float] | None = None,
    slice_indices: Sequence[int] | None = None,
) -> FrameView:
    """Sample ``n_frames`` evenly spaced slices of a volume as video frames.

    Qwen-VL video encoders merge frames in pairs (temporal patch 2), so ``n_frames`` must be even.
    A volume with fewer slices than ``n_frames`` repeats slices rather than inventing them.

    Args:
        volume: a channel-first volume ``(C, X, Y, Z)``, RAS for the orientation to be anatomical.
        n_frames: how many frames, even and >= 2 (ignored if ``slice_indices`` is given).
        axis: the spatial axis to step along (2 = axial, 1 = coronal, 0 = sagittal for RAS).
        spacing: voxel size in mm per axis; default from the MetaTensor, else 1 mm.
        size: longest frame side in pixels; default keeps the finer in-plane spacing as pitch.
        orientation: ``radiological`` (default), ``neurological`` or ``array`` (no flips).
        resample: PIL filter for the aspect-ratio resize.
        window: intensity ``(low, high)`` mapped to black and white; default 0.5/99.5 percentiles.
        slice_indices: explicit slices to show instead of an even sample (an even count).

    Returns:
        A ``FrameView`` whose frames show the planes spanned by the two other axes.
    """
    count = n_frames if slice_indices is None else len(slice_indices)
    if count < 2 or count % 2:
        raise ValueError(f"the number of frames must be an even number >= 2, got {count}")
    _, scaled, pmap = prepare(volume, axis, spacing, size, orientation, window)
    indices = _slices(pmap.n_slices, count, slice_indices)
    frames = [render_plane(np.take(scaled, k, axis=axis + 1), pmap, resample) for k in indices]
    return FrameView(frames=frames, slice_indices=indices, plane=pmap)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def volume_to_montage(
    volume: torch.Tensor | np.ndarray,
    n_tiles: int = 16,
    axis: int = 2,
    *,
    columns: int | None = None,
    gap: int = 4,
    labels: bool = True,
    gap_color: tuple[int, int, int] = (128, 128, 128),
    spacing: Sequence[float] | None = None,
    size: int | None = None,
    orientation: Orientation = "radiological",
    resample: Resample = "bilinear",
    window: tuple[float, float] | None = None,
    slice_indices: Sequence[int] | None = None,
) -> MontageView:
    """Tile evenly spaced slices of a volume into one labelled grid image.

    Each tile's picture is drawn exactly as a frame of ``volume_to_frames`` with the same
    arguments; its label (``x=``, ``y=`` or ``z=`` and the slice index, in the default PIL font)
    sits in a strip above it, so no anatomy is hidden under text.

    Args:
        volume: a channel-first volume ``(C, X, Y, Z)``.
        n_tiles: how many tiles, at most one per slice (ignored if ``slice_indices`` is given).
        axis: the spatial axis the tiles step along.
        columns: tiles per row; default ``ceil(sqrt(n))``, a near-square grid.
        gap: pixels between neighbouring tiles, filled with ``gap_color``.
        labels: draw the slice label strips.
        gap_color: RGB of the gaps, grey so they stand out from black background and white bone.
        spacing, size, orientation, resample, window: as for ``volume_to_frames`` (``size`` is
            per tile picture).
        slice_indices: explicit slices to show instead of an even sample.

    Returns:
        A ``MontageView``.
    """
    if n_tiles < 1 or gap < 0 or (columns is not None and columns < 1):
        raise ValueError(
            f"need n_tiles >= 1, gap >= 0, columns >= 1; got {n_tiles}, {gap}, {columns}"
        )
    _, scaled, pmap = prepare(volume, axis, spacing, size, orientation, window)
    indices = _slices(pmap.n_slices, min(n_tiles, pmap.n_slices), slice_indices)
    columns = columns or math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / columns)
    label_height = _font().getbbox(f"{'xyz'[axis]}=0123456789")[3] + 2 if labels else 0
    w, h = pmap.width, pmap.height
    canvas = Image.new(
        "RGB",
        (columns * w + (columns - 1) * gap, rows * (label_height + h) + (rows - 1) * gap),
        gap_color,
    )
    view = MontageView(canvas, indices, pmap, columns, gap, label_height)
    for tile, k in enumerate(indices):
        x0, y0 = view.tile_origin(tile)
        canvas.paste(render_plane(np.take(scaled, k, axis=axis + 1), pmap, resample), (x0, y0))
        if labels:
            # Drawn on its own strip so text never spills into a neighbouring tile.
            strip = Image.new("RGB", (w, label_height), (0, 0, 0))
            ImageDraw.Draw(strip).text(
                (1, 1), f"{'xyz'[axis]}={k}", fill=(255, 255, 255), font=_font()
            )
            canvas.paste(strip, (x0, y0 - label_height))
    return view

"""Views of a volume and their coordinate maps: exact pixels on a bright cube, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medvl.scans.views import (
    PlaneMap,
    scan_to_image,
    volume_to_frames,
    volume_to_mip,
    volume_to_montage,
    volume_to_slice,
)

PROPERTY = settings(max_examples=150, deadline=None)
EXACT = {"resample": "nearest", "window": (0.0, 100.0)}  # voxel 100 -> pixel 255, 0 -> 0

# A cube at voxels i 5..6, j 6..8, k 1..2 of an (8, 10, 6) volume; spacing (1, 1, 2) makes every
# display scale an integer, so the cube's display edges fall on pixel edges.
SHAPE, SPACING = (8, 10, 6), (1.0, 1.0, 2.0)
CUBE_LO, CUBE_HI = (5, 6, 1), (7, 9, 3)  # voxel edges, hi exclusive
CUBE_BOX = [lo / n for lo, n in zip(CUBE_LO + CUBE_HI, SHAPE * 2, strict=True)]


def cube_volume(shape=SHAPE, lo=CUBE_LO, hi=CUBE_HI) -> np.ndarray:
    volume = np.zeros((1, *shape), dtype=np.float32)
    volume[0, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 100.0
    return volume


def gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[..., 0].astype(int)


def pixel_box(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised box in whole pixels, asserting its edges really are pixel edges."""
    scaled = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
    rounded = [round(v) for v in scaled]
    assert np.allclose(scaled, rounded, atol=1e-9), scaled
    return rounded[0], rounded[1], rounded[2], rounded[3]


def assert_only_box_bright(picture: np.ndarray, box: tuple[int, int, int, int] | None) -> None:
    expected = np.zeros_like(picture)
    if box is not None:
        x1, y1, x2, y2 = box
        expected[y1:y2, x1:x2] = 255
    np.testing.assert_array_equal(picture, expected)


# --- exact pixels on a tiny volume -------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["radiological", "neurological", "array"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_frames_show_the_cube_exactly_where_mapped(axis: int, orientation: str) -> None:
    n_slices = SHAPE[axis]
    view = volume_to_frames(
        cube_volume(),
        n_slices + n_slices % 2,
        axis,
        spacing=SPACING,
        orientation=orientation,
        **EXACT,
    )
    boxes = view.frame_boxes(CUBE_BOX)
    shown = [t for t, k in enumerate(view.slice_indices) if CUBE_LO[axis] <= k < CUBE_HI[axis]]
    assert sorted(boxes) == shown
    for t, frame in enumerate(view.frames):
        assert frame.size == view.size
        box = pixel_box(boxes[t], *frame.size) if t in boxes else None
        assert_only_box_bright(gray(frame), box)
    assert view.box_from_frames(boxes) == pytest.approx(CUBE_BOX)


@pytest.mark.parametrize(
    ("orientation", "corners"),
    [
        ("radiological", ["top-left"] * 3),
        ("neurological", ["top-left", "top-right", "top-right"]),  # sagittal as radiological
        ("array", ["bottom-right"] * 3),
    ],
)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_display_orientation(axis: int, orientation: str, corners: list[str]) -> None:
    # The right-anterior-superior corner voxel: radiological shows R, A and S left or up.
    volume = cube_volume(lo=(7, 9, 5), hi=(8, 10, 6))
    view = volume_to_slice(
        volume, SHAPE[axis] - 1, axis, spacing=SPACING, orientation=orientation, **EXACT
    )
    picture = gray(view.image)
    h, w = picture.shape
    vertical, horizontal = corners[axis].split("-")
    row, col = (0 if vertical == "top" else h - 1), (0 if horizontal == "left" else w - 1)
    assert picture[row, col] == 255 and picture[h - 1 - row, w - 1 - col] == 0
    if orientation == "radiological":
        assert (
            view.plane.edges
            == [
                {"left": "A", "right": "P", "top": "S", "bottom": "I"},
                {"left": "R", "right": "L", "top": "S", "bottom": "I"},
                {"left": "R", "right": "L", "top": "A", "bottom": "P"},
            ][axis]
        )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_montage_tiles_show_the_cube_and_keep_the_gap(axis: int) -> None:
    grey = (128, 128, 128)
    view = volume_to_montage(
        cube_volume(), 99, axis, spacing=SPACING, gap=3, gap_color=grey, **EXACT
    )
    assert view.slice_indices == list(range(SHAPE[axis]))  # at most one tile per slice
    w, h = view.size
    picture = gray(view.image)
    covered = np.zeros(picture.shape, bool)
    boxes = view.tile_boxes(CUBE_BOX)
    for tile in range(len(view.slice_indices)):
        x0, y0 = view.tile_origin(tile)
        box = None
        if tile in boxes:
            x1, y1, x2, y2 = pixel_box(boxes[tile], 1, 1)
            assert x0 <= x1 < x2 <= x0 + w and y0 <= y1 < y2 <= y0 + h
            box = (x1 - x0, y1 - y0, x2 - x0, y2 - y0)
        assert_only_box_bright(picture[y0 : y0 + h, x0 : x0 + w], box)
        label = picture[y0 - view.label_height : y0, x0 : x0 + w]
        assert label.max() > 128, "the slice label is drawn"
        covered[y0 - view.label_height : y0 + h, x0 : x0 + w] = True
    assert sorted(boxes) == list(range(CUBE_LO[axis], CUBE_HI[axis]))
    # Everything outside the tiles is gap colour: the tiles are separated by exactly `gap`.
    assert np.all(np.asarray(view.image)[~covered] == grey)
    assert view.image.width == view.columns * w + (view.columns - 1) * 3
    assert view.box_from_tiles(boxes) == pytest.approx(CUBE_BOX)
    assert view.box_from_tiles(list(boxes.values())) == pytest.approx(CUBE_BOX)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mip_and_slice_show_the_cube(axis: int) -> None:
    mip = volume_to_mip(cube_volume(), axis, spacing=SPACING, **EXACT)
    box = pixel_box(mip.image_box(CUBE_BOX), *mip.image.size)
    assert_only_box_bright(gray(mip.image), box)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert CUBE_LO[axis] <= mip.voxel_at(*centre)[axis] < CUBE_HI[axis]  # the bright depth
    inside = volume_to_slice(cube_volume(), CUBE_LO[axis], axis, spacing=SPACING, **EXACT)
    assert_only_box_bright(
        gray(inside.image), pixel_box(inside.image_box(CUBE_BOX), *inside.image.size)
    )
    outside = volume_to_slice(
        cube_volume(), CUBE_HI[axis] % SHAPE[axis], axis, spacing=SPACING, **EXACT
    )
    assert outside.image_box(CUBE_BOX) is None
    assert gray(outside.image).max() == 0


def test_smooth_resampling_keeps_the_cube_inside_its_box() -> None:
    # Non-integer display scale (3 mm / 0.7 mm) and the default bilinear filter.
    volume = cube_volume((20, 16, 9), (4, 5, 2), (11, 9, 5))
    box = [4 / 20, 5 / 16, 2 / 9, 11 / 20, 9 / 16, 5 / 9]
    view = volume_to_slice(volume, 6, axis=1, spacing=(0.7, 0.7, 3.0), window=(0, 100))
    w, h = view.image.size
    x1, y1, x2, y2 = (np.array(view.image_box(box)) * [w, h, w, h]).tolist()
    ramp = 3.0 / 0.7 / 2 + 1  # bilinear blends over half a voxel each side of an edge
    picture = gray(view.image)
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    deep = (cols > x1 + 1) & (cols < x2 - 1) & (rows > y1 + ramp) & (rows < y2 - ramp)
    far = (cols < x1 - 1) | (cols > x2 + 1) | (rows < y1 - ramp) | (rows > y2 + ramp)
    assert deep.any() and np.all(picture[deep] == 255) and np.all(picture[far] == 0)


# --- sizes, inputs, errors ---------------------------------------------------------------------


def test_physical_aspect_ratio() -> None:
    volume = np.zeros((1, 10, 12, 4), np.float32)
    spacing = (0.4, 0.4, 3.0)
    sizes = [volume_to_slice(volume, 0, a, spacing=spacing).image.size for a in (0, 1, 2)]
    assert sizes == [(12, 30), (10, 30), (10, 12)]  # 4 slices x 3 mm = 30 pixels of 0.4 mm
    sized = volume_to_frames(volume, 4, axis=1, spacing=spacing, size=60)
    assert {f.size for f in sized.frames} == {(20, 60)}


def test_frames_contract_and_inputs() -> None:
    from monai.data import MetaTensor

    volume = MetaTensor(torch.rand(1, 6, 7, 3), meta={"spacing": (1.0, 1.0, 2.0)})
    view = volume_to_frames(volume, n_frames=8)
    assert len(view.frames) == 8 and len({f.size for f in view.frames}) == 1
    assert view.size == (6, 7) and view.axis == 2
    assert sorted(set(view.slice_indices)) == [0, 1, 2]  # fewer slices than frames: repeats
    assert volume_to_frames(volume, 4, axis=0).size == (7, 6)  # spacing read from meta
    assert volume_to_frames(volume.numpy(), 2, slice_indices=[2, 0]).slice_indices == [2, 0]
    with pytest.raises(ValueError, match="even"):
        volume_to_frames(volume, n_frames=5)
    with pytest.raises(ValueError, match="spacing"):
        volume_to_frames(volume, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="box"):
        view.frame_boxes([0.5, 0.5, 0.5, 0.4, 0.6, 0.6])
    assert view.locate((1, 1, 1)) is not None
    sparse = volume_to_frames(volume, 2)
    assert sparse.slice_indices == [0, 2] and sparse.locate((0, 0, 1)) is None
    assert sparse.locate((0, 0, 1), nearest=True)[0] == 0


def test_scan_to_image_keeps_the_array_layout() -> None:
    scan = np.zeros((1, 5, 3), np.float32)
    scan[0, 4, 1] = 1.0
    image = scan_to_image(scan)
    assert image.size == (5, 3) and image.getpixel((4, 1)) == (255, 255, 255)


def test_montage_rejects_boxes_in_gaps() -> None:
    view = volume_to_montage(cube_volume(), 4, spacing=SPACING, gap=4)
    x0, y0 = view.tile_origin(0)
    gap_x = x0 + view.size[0] + 2
    assert view.tile_at(gap_x, y0 + 1) is None and view.voxel_at(gap_x, y0 + 1) is None
    with pytest.raises(ValueError, match="no tile"):
        view.box_from_tiles([[gap_x - 1, y0, gap_x + 1, y0 + 2]])


# --- properties: every axis, anisotropic spacing, odd shapes ------------------------------------

shapes = st.tuples(*[st.integers(1, 40)] * 3)
spacings = st.tuples(*[st.floats(0.3, 5.0)] * 3)
axes = st.integers(0, 2)
orientations = st.sampled_from(["radiological", "neurological", "array"])
sizes = st.none() | st.integers(4, 96)


@st.composite
def boxes(draw: st.DrawFn, shape: tuple[int, ...]) -> list[float]:
    """Normalised boxes with corners anywhere, or on voxel edges, where off-by-ones live."""
    corners = []
    for n in shape:
        edge = st.floats(0, 1) | st.integers(0, n).map(lambda k, n=n: k / n)
        corners.append(sorted([draw(edge), draw(edge)]))
    return [c[0] for c in corners] + [c[1] for c in corners]


volumes_and_boxes = shapes.flatmap(lambda shape: st.tuples(st.just(shape), boxes(shape)))


def assert_within_a_voxel(got: list[float], box: list[float], shape, axis: int) -> None:
    """In-plane exact; through-plane snapped outwards to the shown slices' edges."""
    for d in range(3):
        tol = 1.0 / shape[d] + 1e-9 if d == axis else 1e-9
        assert box[d] - tol <= got[d] <= box[d] + 1e-9, (d, got, box)
        assert box[d + 3] - 1e-9 <= got[d + 3] <= box[d + 3] + tol, (d, got, box)


def all_slices(shape, axis: int) -> int:
    return shape[axis] + shape[axis] % 2


@PROPERTY
@given(volumes_and_boxes, spacings, axes, orientations, sizes, st.integers(1, 20), st.data())
def test_frame_boxes_round_trip(shape_box, spacing, axis, orientation, size, n_pairs, data):
    shape, box = shape_box
    volume = np.zeros((1, *shape), np.float32)
    kwargs = {"spacing": spacing, "orientation": orientation, "size": size}
    view = volume_to_frames(volume, all_slices(shape, axis), axis, **kwargs)
    assert_within_a_voxel(view.box_from_frames(view.frame_boxes(box)), box, shape, axis)
    # And the other way: a box drawn on one frame comes back on every frame of that slice.
    frame = data.draw(st.integers(0, len(view.frames) - 1))
    drawn = view.plane.project(data.draw(boxes(shape)))
    again = view.frame_boxes(view.box_from_frames({frame: drawn}))
    same_slice = [t for t, k in enumerate(view.slice_indices) if k == view.slice_indices[frame]]
    assert sorted(again) == same_slice and again[frame] == pytest.approx(drawn, abs=1e-12)
    # With fewer frames than slices the box is still recovered, as finely as the frames step.
    sparse = volume_to_frames(volume, 2 * n_pairs, axis, **kwargs)
    frame_boxes = sparse.frame_boxes(box)
    if frame_boxes:
        got = sparse.box_from_frames(frame_boxes)
        step = math.ceil(shape[axis] / (2 * n_pairs)) + 1
        n = shape[axis]
        assert box[axis] - 1 / n - 1e-9 <= got[axis] <= box[axis] + step / n
        assert box[axis + 3] - step / n <= got[axis + 3] <= box[axis + 3] + 1 / n + 1e-9


@PROPERTY
@given(volumes_and_boxes, spacings, axes, orientations, sizes, st.integers(0, 6))
def test_montage_boxes_round_trip(shape_box, spacing, axis, orientation, size, gap) -> None:
    shape, box = shape_box
    volume = np.zeros((1, *shape), np.float32)
    kwargs = {"spacing": spacing, "orientation": orientation, "size": size}
    view = volume_to_montage(volume, 99, axis, gap=gap, **kwargs)  # every slice a tile
    tiles = view.tile_boxes(box)
    assert_within_a_voxel(view.box_from_tiles(tiles), box, shape, axis)
    if gap:  # bare boxes find their tile by their centre
        assert_within_a_voxel(view.box_from_tiles(list(tiles.values())), box, shape, axis)


@PROPERTY
@given(shapes, spacings, axes, orientations, sizes, st.data())
def test_points_round_trip(shape, spacing, axis, orientation, size, data) -> None:
    volume = np.zeros((1, *shape), np.float32)
    kwargs = {"spacing": spacing, "orientation": orientation, "size": size}
    voxel = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    frames = volume_to_frames(volume, all_slices(shape, axis), axis, **kwargs)
    frame, x, y = frames.locate(voxel)
    assert frames.voxel_at(frame, x, y) == voxel
    # Pixel coordinates are half-open like voxels: a voxel's top-left display corner is inside it.
    unit = [v / n for v, n in zip(voxel + tuple(v + 1 for v in voxel), shape * 2, strict=True)]
    x1, y1, _, _ = frames.frame_boxes(unit)[frame]
    assert frames.voxel_at(frame, x1 * frames.size[0], y1 * frames.size[1]) == voxel
    montage = volume_to_montage(volume, 99, axis, gap=2, **kwargs)
    assert montage.voxel_at(*montage.locate(voxel)[1:]) == voxel
    one = volume_to_slice(volume, voxel[axis], axis, **kwargs)
    assert one.voxel_at(*one.locate(voxel)) == voxel
    # A display point -> voxel -> the voxel's centre: at most half a voxel's footprint away.
    w, h = frames.size
    x = data.draw(st.floats(0, w, exclude_max=True))
    y = data.draw(st.floats(0, h, exclude_max=True))
    _, x2, y2 = frames.locate(frames.voxel_at(frame, x, y))
    assert abs(x2 - x) <= w / shape[frames.plane.h_axis] / 2 + 1e-9
    assert abs(y2 - y) <= h / shape[frames.plane.v_axis] / 2 + 1e-9


@PROPERTY
@given(volumes_and_boxes, spacings, axes, orientations, sizes, st.data())
def test_slice_and_mip_boxes_round_trip(shape_box, spacing, axis, orientation, size, data):
    shape, box = shape_box
    volume = np.zeros((1, *shape), np.float32)
    kwargs = {"spacing": spacing, "orientation": orientation, "size": size}
    first = data.draw(st.integers(0, shape[axis] - 1))
    last = data.draw(st.integers(first, shape[axis] - 1))
    views = [
        (volume_to_slice(volume, first, axis, **kwargs), (first, first)),
        (volume_to_mip(volume, axis, slab=(first, last), **kwargs), (first, last)),
    ]
    for view, slab in views:
        lo, hi = view.plane.span(*slab)
        shown = view.image_box(box)
        if shown is None:
            assert box[axis + 3] * shape[axis] <= lo * shape[axis] + 1e-6 or (
                box[axis] * shape[axis] >= hi * shape[axis] - 1e-6
            )
            continue
        back = view.box_from_image(shown)
        assert back[axis] == pytest.approx(lo) and back[axis + 3] == pytest.approx(hi)
        for d in {0, 1, 2} - {axis}:
            assert back[d] == pytest.approx(box[d]) and back[d + 3] == pytest.approx(box[d + 3])
        assert view.image_box(back) == pytest.approx(shown)


def shown_voxels(voxel_at, x0: int, y0: int, width: int, height: int) -> tuple[np.ndarray, ...]:
    """The voxel each pixel's centre maps to, probed just either side of the centre.

    A centre lying exactly on a voxel edge may show either voxel (PIL's tie-break is float
    rounding), so a pixel passes if it matches any probe; elsewhere all probes agree.
    """
    probes = []
    for dx, dy in [(-1e-6, -1e-6), (1e-6, 1e-6), (-1e-6, 1e-6), (1e-6, -1e-6)]:
        probes.append(
            np.array(
                [
                    [voxel_at(x0 + c + 0.5 + dx, y0 + r + 0.5 + dy) for c in range(width)]
                    for r in range(height)
                ]
            )
        )
    return tuple(probes)


def assert_pixels_show(picture: np.ndarray, volume: np.ndarray, probes) -> None:
    values = [volume[0][p[..., 0], p[..., 1], p[..., 2]] for p in probes]
    ok = np.any([picture == v for v in values], axis=0)
    assert ok.all(), (np.argwhere(~ok)[:5], picture[~ok][:5], values[0][~ok][:5])


@PROPERTY
@given(shapes, spacings, axes, orientations, sizes, st.data())
def test_rendered_pixels_are_the_mapped_voxels(shape, spacing, axis, orientation, size, data):
    # Random grey levels: any off-by-one in the map shows up as a wrong pixel somewhere.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    volume = rng.integers(0, 256, size=(1, *shape)).astype(np.float32)
    kwargs = {
        "spacing": spacing,
        "orientation": orientation,
        "size": size,
        "resample": "nearest",
        "window": (0.0, 255.0),
    }
    index = data.draw(st.integers(0, shape[axis] - 1))
    for view in (
        volume_to_slice(volume, index, axis, **kwargs),
        volume_to_mip(volume, axis, **kwargs),
    ):
        w, h = view.image.size
        assert_pixels_show(gray(view.image), volume, shown_voxels(view.voxel_at, 0, 0, w, h))
    montage = volume_to_montage(volume, 4, axis, gap=1, **kwargs)
    tile = data.draw(st.integers(0, len(montage.slice_indices) - 1))
    x0, y0 = montage.tile_origin(tile)
    w, h = montage.size
    picture = gray(montage.image)[y0 : y0 + h, x0 : x0 + w]
    assert_pixels_show(picture, volume, shown_voxels(montage.voxel_at, x0, y0, w, h))


def test_plane_map_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="axis"):
        PlaneMap.build((2, 2, 2), 3, (1, 1, 1))
    with pytest.raises(ValueError, match="orientation"):
        PlaneMap.build((2, 2, 2), 0, (1, 1, 1), orientation="sideways")  # type: ignore[arg-type]

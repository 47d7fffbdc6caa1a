"""The demo's pictures: planes, windows, orientation letters, scale bar, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.demo.viewer import (
    CT_WINDOWS,
    FILE_WINDOW,
    FULL_RANGE,
    MANUAL,
    Overlay,
    draw_plane,
    window_presets,
    window_range,
)
from medvl.scans import load_scan
from medvl.scans.examples import example_scans
from medvl.scans.phantoms import make_fundus_case, write_case
from medvl.scans.views import volume_to_slice

RED, GREEN = (255, 0, 0), (0, 200, 0)


def _is(image, colour) -> np.ndarray:
    return np.all(np.asarray(image.convert("RGB")) == np.array(colour, np.uint8), axis=-1)


def test_the_colour_cine_is_drawn_the_right_way_up():
    """The ultrasound cine has no patient geometry: its frames are shown as stored (it used to
    be drawn rotated 180 degrees, flipped as if it were a RAS volume)."""
    scan = load_scan(example_scans()["us_cine"])
    assert scan.meta["orientation"] is None
    picture = draw_plane(scan, "axial", 4, window=(0, 255), side=320)
    assert picture.image.size == (320, 240) and picture.n_slices == 30
    frame = scan[:3, :, :, 4].numpy().transpose(2, 1, 0).astype(np.uint8)  # (rows, cols, RGB)
    shown = np.asarray(picture.image)
    # The scale bar covers the bottom rows' left part; everything else is the frame itself.
    np.testing.assert_array_equal(shown[:200], frame[:200])


def test_a_colour_photo_keeps_its_colours_and_is_enlarged(tmp_path):
    case = make_fundus_case(0)
    scan = load_scan(write_case(case, tmp_path)["png"])
    picture = draw_plane(scan, window=(0, 255), side=2 * scan.shape[1])
    assert picture.image.size == (2 * scan.shape[1], 2 * scan.shape[2])
    shown = np.asarray(picture.image)[::2, ::2]  # nearest: every other pixel is the original
    np.testing.assert_array_equal(shown[:100], case.image.transpose(2, 1, 0)[:100])


def test_three_planes_with_radiological_letters_and_physical_size(knee):
    scan = load_scan(knee[1])  # 48 x 96 x 96 voxels of 1.5 x 0.75 x 0.75 mm
    sizes = {}
    for plane, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        picture = draw_plane(scan, plane, side=400)
        sizes[plane] = picture.image.size
        assert (
            picture.n_slices == scan.shape[axis + 1] and picture.index == scan.shape[axis + 1] // 2
        )
        assert max(picture.image.size) == 400
        assert picture.mm_per_pixel == pytest.approx(72 / picture.image.size[0], rel=0.01)
    assert sizes == {"axial": (400, 400), "coronal": (400, 400), "sagittal": (400, 400)}
    # The letters are drawn in yellow where PlaneMap.edges says (R on the screen's left).
    axial = np.asarray(draw_plane(scan, "axial", side=400).image)
    yellow = (axial[..., 0] > 200) & (axial[..., 1] > 200) & (axial[..., 2] < 80)
    assert yellow[190:210, :20].any() and yellow[190:210, -20:].any()
    assert yellow[:20, 190:210].any() and yellow[-20:, 190:210].any()


def test_a_3d_box_is_drawn_on_every_slice_it_spans_and_only_there(knee):
    scan = load_scan(knee[1])
    box = [0.2, 0.3, 0.4, 0.6, 0.7, 0.6]  # z from 0.4 to 0.6 of 96 slices: 38..57
    first = draw_plane(scan, "axial", 0, overlays=[Overlay(RED, box=box)])
    assert first.box_slices == [(38, 57)]
    for index in (38, 47, 57):
        red = _is(draw_plane(scan, "axial", index, overlays=[Overlay(RED, box=box)]).image, RED)
        view = volume_to_slice(scan, index, 2, size=560, spacing=scan.meta["spacing"])
        x1, y1, x2, y2 = np.array(view.plane.project(box)) * 560
        rows, cols = np.nonzero(red)
        assert red.sum() > 100
        assert (
            cols.min() >= x1 - 1 and cols.max() <= x2 and rows.min() >= y1 - 1 and rows.max() <= y2
        )
    for index in (37, 58):
        assert not _is(
            draw_plane(scan, "axial", index, overlays=[Overlay(RED, box=box)]).image, RED
        ).any()
    # The same box across the sagittal plane: x from 0.2 to 0.6 of 48 slices.
    assert draw_plane(scan, "sagittal", 0, overlays=[Overlay(RED, box=box)]).box_slices == [(9, 28)]


def test_a_mask_is_tinted_on_its_voxels(knee):
    case = knee[0]
    scan = load_scan(knee[1])
    mask = case.mask > 0
    index = int(np.argmax(mask.sum(axis=(0, 1))))  # the axial slice with the most lesion
    plain = np.asarray(draw_plane(scan, "axial", index).image).astype(int)
    tinted = np.asarray(
        draw_plane(scan, "axial", index, overlays=[Overlay(GREEN, mask=mask)]).image
    )
    changed = np.any(plain != tinted, axis=-1)
    tint = tinted.astype(int)
    greener = (tint[..., 1] - tint[..., 0]) > (plain[..., 1] - plain[..., 0])
    assert changed.sum() > 50 and greener[changed].mean() > 0.9
    away = int(np.argmin(mask.sum(axis=(0, 1))))
    assert mask[:, :, away].sum() == 0
    assert np.array_equal(
        np.asarray(draw_plane(scan, "axial", away).image),
        np.asarray(draw_plane(scan, "axial", away, overlays=[Overlay(GREEN, mask=mask)]).image),
    )


def test_window_presets_per_modality_and_their_ranges():
    assert window_presets("CT", (40, 400), 1)[:2] == [FILE_WINDOW, "CT soft tissue"]
    assert set(CT_WINDOWS) <= set(window_presets("CT", None, 1))
    assert window_presets("MR", None, 1)[0] == "0.5-99.5 %" and "CT lung" not in window_presets(
        "MR", None, 1
    )
    assert window_presets("US", None, 3)[0] == FULL_RANGE
    values = np.arange(-1000, 1001, dtype=np.float32)
    assert window_range(values, "CT lung") == (-1350.0, 150.0)
    assert window_range(values, FULL_RANGE) == (-1000.0, 1000.0)
    assert window_range(values, "1-99 %") == pytest.approx((-980.0, 980.0))
    assert window_range(values, MANUAL, 100, 50) == (75.0, 125.0)
    assert window_range(values, FILE_WINDOW, file_window=(10, 20)) == (0.0, 20.0)
    with pytest.raises(ValueError, match="positive width"):
        window_range(values, MANUAL, 100, 0)
    with pytest.raises(ValueError, match="no window of its own"):
        window_range(values, FILE_WINDOW)
    with pytest.raises(ValueError, match="unknown window"):
        window_range(values, "bone-ish")


def test_a_ct_window_changes_the_picture():
    scan = load_scan(example_scans()["ct_small"])
    values = scan.as_tensor().numpy()
    soft = np.asarray(draw_plane(scan, window=window_range(values, "CT soft tissue")).image)
    bone = np.asarray(draw_plane(scan, window=window_range(values, "CT bone")).image)
    assert soft.shape == bone.shape and soft.shape[0] >= 512 and (soft != bone).mean() > 0.3

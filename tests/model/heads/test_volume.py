"""medvl.model.heads.volume: frame masks back onto the volume through the view's map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvl.model.heads import (
    masks_to_volume,
    pairs_to_frames,
)
from medvl.scans.views import volume_to_frames


def test_pairs_to_frames():
    masks = torch.arange(3.0)[:, None, None].expand(3, 2, 2)  # step t filled with t
    frames = pairs_to_frames(masks, n_frames=6)
    assert frames[:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    # 5 frames were padded to 6 by prepare_inputs; the padding frame is dropped.
    assert pairs_to_frames(masks, n_frames=5)[:, 0, 0].tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="grid steps"):
        pairs_to_frames(masks, n_frames=8)


# A cube in an (8, 10, 6) volume; spacing (1, 0.5, 2) makes the axial frames 16 x 10 pixels
# (x stretched 2x against y's 1x) and radiological flips turn both in-plane axes around.
SHAPE, SPACING = (8, 10, 6), (1.0, 0.5, 2.0)


def _cube() -> np.ndarray:
    volume = np.zeros((1, *SHAPE), dtype=np.float32)
    volume[0, 1:4, 6:9, 2:5] = 100.0
    return volume


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("orientation", ["radiological", "array"])
def test_masks_to_volume_puts_frame_masks_on_the_cube(axis, orientation):
    volume = _cube()
    cube = torch.from_numpy(volume[0] > 0)
    n = SHAPE[axis] + SHAPE[axis] % 2  # every slice (one repeated when the count is odd)
    view = volume_to_frames(
        volume,
        n,
        axis,
        spacing=SPACING,
        orientation=orientation,
        resample="nearest",
        window=(0.0, 100.0),
    )
    frame_masks = np.stack([np.asarray(f)[..., 0] > 128 for f in view.frames])
    assert frame_masks.shape == (n, view.plane.height, view.plane.width)
    back = masks_to_volume(frame_masks, view)
    assert back.shape == SHAPE
    torch.testing.assert_close(back > 0.5, cube)

    # Masks at another resolution of the same frames (as the processor resizes them, or a
    # feature grid at twice the frame size) map back to the same voxels.
    big = torch.from_numpy(frame_masks).repeat_interleave(2, 1).repeat_interleave(2, 2)
    torch.testing.assert_close(masks_to_volume(big, view) > 0.5, cube)


def test_masks_to_volume_fills_unshown_slices_from_the_nearest_frame():
    volume = _cube()
    view = volume_to_frames(volume, 2, 2, spacing=SPACING, resample="nearest", window=(0, 100))
    assert view.slice_indices == [1, 4]  # slices 2, 3 are not shown
    frame_masks = np.stack([np.asarray(f)[..., 0] > 128 for f in view.frames])
    cube = torch.from_numpy(volume[0] > 0)

    filled = masks_to_volume(frame_masks, view) > 0.5
    torch.testing.assert_close(filled[..., 4], cube[..., 4])
    assert not filled[..., 1].any()  # slice 1 shows no cube
    torch.testing.assert_close(filled[..., 0], filled[..., 1])  # 0 is nearest to frame 0 (1)
    torch.testing.assert_close(filled[..., 3], cube[..., 4])  # 3 is nearest to frame 1 (4)
    only_shown = masks_to_volume(frame_masks, view, nearest=False) > 0.5
    assert not only_shown[..., [0, 2, 3, 5]].any()
    torch.testing.assert_close(only_shown[..., 4], cube[..., 4])
    with pytest.raises(ValueError, match="masks for this view"):
        masks_to_volume(frame_masks[:1], view)

"""medvl.model.heads.mask: vision feature grids in raster order, a mask head that fits, its loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from heads_helpers import HIDDEN
from PIL import Image, ImageDraw

from medvl.model import FAMILIES
from medvl.model.heads import (
    MaskHead,
    dice_score,
    mask_loss,
    masks_to_volume,
    pairs_to_frames,
    vision_feature_grid,
)
from medvl.model.inputs import build_messages, prepare_inputs
from medvl.scans.views import volume_to_frames

# --- vision feature grids ----------------------------------------------------------------------


def _image_grid(model, processor, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = prepare_inputs(processor, build_messages("where?", image=image))
    with torch.no_grad():
        (grid,) = vision_feature_grid(model, inputs["pixel_values"], inputs["image_grid_thw"])
    return grid, inputs["image_grid_thw"][0]


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_feature_grid_is_in_raster_order(vlm, family):
    model, processor = vlm(family)
    ip = processor.image_processor
    cell = ip.patch_size * ip.merge_size  # pixels per merged token: 28, or 32 on Qwen3-VL
    rows, cols = 4, 6  # not square, so a swapped h/w would show
    background = Image.new("RGB", (cols * cell, rows * cell), (40, 40, 40))
    base, thw = _image_grid(model, processor, background)

    t, h, w = thw.tolist()
    assert base.shape == (t, h // ip.merge_size, w // ip.merge_size, HIDDEN) == (1, rows, cols, 64)
    # A bright square filling exactly one cell changes that cell's features most. On Qwen2.5-VL
    # (windows of 4x4 cells) the window order would put cell (0, 5) at raster index 17, i.e. (2, 5),
    # had the tower not restored raster order.
    for r, c in [(0, cols - 1), (rows - 1, 0), (2, 3)]:
        image = background.copy()
        ImageDraw.Draw(image).rectangle(
            [c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1], fill=(255, 255, 255)
        )
        grid, _ = _image_grid(model, processor, image)
        change = (grid - base).norm(dim=-1)[0]  # (rows, cols)
        assert divmod(int(change.argmax()), cols) == (r, c), family


def test_vision_feature_grid_of_a_volume_has_one_step_per_frame_pair(vlm):
    model, processor = vlm("qwen2_5_vl")
    volume = np.zeros((1, 32, 32, 6), dtype=np.float32)
    volume[0, 4:12, 20:28, 2:4] = 100.0  # a block in slices 2 and 3 only: frame pair 1
    view = volume_to_frames(volume, n_frames=6, axis=2, window=(0.0, 100.0))
    assert view.slice_indices == [0, 1, 2, 3, 4, 5]
    blank = volume_to_frames(np.zeros_like(volume), n_frames=6, axis=2, window=(0.0, 100.0))

    def grid(frames):
        inputs = prepare_inputs(processor, build_messages("where?", video=frames))
        with torch.no_grad():
            (g,) = vision_feature_grid(
                model, inputs["pixel_values_videos"], inputs["video_grid_thw"]
            )
        return g, inputs["video_grid_thw"][0]

    g, thw = grid(view.frames)
    g0, _ = grid(blank.frames)
    assert thw[0].item() == 3 and g.shape[0] == 3  # 6 frames -> 3 temporal steps
    change = (g - g0).norm(dim=-1)  # (3, H', W')
    assert int(change.flatten(1).amax(1).argmax()) == 1

    # MaskHead on the video grid -> per-pair masks at frame size -> frames -> the volume.
    head = MaskHead(HIDDEN, dim=16)
    logits = head(torch.randn(2, HIDDEN), g, out_size=(view.plane.height, view.plane.width))
    assert logits.shape == (2, 3, view.plane.height, view.plane.width)
    frames = pairs_to_frames(logits, n_frames=6)
    assert frames.shape == (2, 6, view.plane.height, view.plane.width)
    assert masks_to_volume(frames[0].sigmoid(), view).shape == (32, 32, 6)


# --- masks -------------------------------------------------------------------------------------


def test_mask_head_overfits_one_image(vlm):
    torch.manual_seed(0)
    model, processor = vlm("qwen2_5_vl")
    width, height = 168, 112
    image = Image.new("RGB", (width, height), (30, 30, 30))
    ImageDraw.Draw(image).ellipse([40, 20, 110, 85], fill=(220, 220, 220))
    target = torch.from_numpy(np.asarray(image)[..., 0] > 128)[None, None]  # (1, T'=1, H, W)

    grid, _ = _image_grid(model, processor, image)  # frozen tower: features computed once
    query = torch.randn(HIDDEN)
    head = MaskHead(HIDDEN, dim=32, refine_size=16)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        logits = head(query, grid, out_size=(height, width))
        loss = mask_loss(logits, target).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = head(query, grid, out_size=(height, width))
    assert losses[-1] < losses[0] / 2
    assert dice_score(logits > 0, target).item() > 0.7


def test_mask_loss_and_dice():
    target = torch.zeros(2, 3, 8, 8)
    target[0, 1, 2:6, 2:6] = 1  # volume 0 has a square in its middle slice; volume 1 is empty
    perfect = torch.where(target > 0, 20.0, -20.0)
    # Not exactly 0: MONAI's smoothed soft Dice of an empty mask is ~0.04 at logits of -20.
    assert mask_loss(perfect, target).loss.item() < 0.02
    torch.testing.assert_close(dice_score(perfect > 0, target), torch.ones(2))
    assert mask_loss(-perfect, target).loss.item() > 1
    half = target.clone()
    half[0, 1, 2:4] = 0  # half the square: Dice = 2 * 8 / (8 + 16)
    assert dice_score(half, target)[0].item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape|of one shape"):
        mask_loss(perfect, target[:, 0])

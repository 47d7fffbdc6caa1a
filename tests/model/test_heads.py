"""Grounding heads on real torch, MONAI and tiny Qwen-VL models: valid boxes, losses, training to
fit synthetic targets, vision feature grids in raster order, masks back into a volume, persistence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from medvl.model import FAMILIES, load_vlm
from medvl.model.heads import (
    BoxHead,
    HeadsConfig,
    MaskHead,
    box_loss,
    build_heads,
    dice_score,
    gather_token_states,
    load_heads,
    mask_loss,
    masks_to_volume,
    pairs_to_frames,
    save_heads,
    vision_feature_grid,
)
from medvl.model.inputs import build_messages, prepare_inputs
from medvl.scans.boxes import paired_box_iou
from medvl.scans.views import volume_to_frames

HIDDEN = 64  # the tiny models' LM hidden size


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy 2-core machine a second
    thread's synchronisation made each training step ~8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vlm(tiny_model_path):
    """``vlm(family) -> (model, processor)``, each tiny family loaded once for the module."""
    loaded: dict[str, tuple] = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_vlm(tiny_model_path(family, "tiny"))
        return loaded[family]

    return get


def _scramble(module: torch.nn.Module, std: float = 1.0, seed: int = 0) -> None:
    # Heads start with zeroed output layers; random weights make the checks below non-trivial.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _random_boxes(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    corners = torch.rand(n, 2, dim, generator=gen)
    return torch.cat([corners.min(1).values, corners.max(1).values], dim=-1)


# --- boxes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_box_head_outputs_valid_boxes_for_any_input(dim):
    head = BoxHead(HIDDEN, dim=dim)
    _scramble(head, std=3.0)  # saturates sigmoids: corners overshoot before the clamp
    states = torch.randn(512, HIDDEN) * 10
    boxes = head(states)
    assert boxes.shape == (512, 2 * dim)
    lower, upper = boxes[:, :dim], boxes[:, dim:]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (lower <= upper).all()
    assert (lower == 0).any() and (upper == 1).any()  # clamping really happened
    # Clamped corners still pass gradients (straight-through), so L1 can pull them back in; a
    # plain clamp would give exactly zero here.
    clamped = (boxes == 0) | (boxes == 1)
    (boxes * clamped).sum().backward()
    assert head.mlp[-1].bias.grad.abs().sum() > 0
    # Leading dimensions pass through, and bf16 states are accepted.
    assert head(states.reshape(8, 64, HIDDEN).bfloat16()).shape == (8, 64, 2 * dim)


@pytest.mark.parametrize("dim", [2, 3])
def test_box_loss_is_zero_for_a_perfect_prediction(dim):
    target = _random_boxes(16, dim, torch.Generator().manual_seed(dim))
    parts = box_loss(target.clone(), target)
    assert parts.loss.item() < 1e-5
    assert parts.terms["l1"].item() == 0 and parts.terms["giou"].item() < 1e-5
    torch.testing.assert_close(paired_box_iou(target, target), torch.ones(16))
    # A small lesion (1% of each axis) too: MONAI's absolute eps must not eat its volume.
    tiny = torch.tensor([[0.50] * dim + [0.51] * dim])
    assert box_loss(tiny, tiny).loss.item() < 1e-5
    assert paired_box_iou(tiny, tiny).item() == pytest.approx(1.0, abs=1e-5)


def test_giou_loss_matches_a_hand_computed_value():
    # 2D: [0, .5]^2 against [.25, .75]^2. Intersection .0625, union .4375, IoU 1/7; enclosing box
    # [0, .75]^2 = .5625; GIoU = 1/7 - (.5625 - .4375) / .5625 = 1/7 - 2/9.
    pred, target = torch.tensor([[0, 0, 0.5, 0.5]]), torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    parts = box_loss(pred, target, l1_weight=0.0, giou_weight=1.0)
    assert parts.terms["giou"].item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert parts.loss.item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert parts.terms["l1"].item() == pytest.approx(0.25)
    assert paired_box_iou(pred, target).item() == pytest.approx(1 / 7, abs=1e-6)
    # 3D: [0, .5]^3 against [.25, .75]^3. Intersection 1/64, union 15/64, IoU 1/15; enclosure
    # 27/64; GIoU = 1/15 - (12/64) / (27/64) = 1/15 - 4/9.
    pred3, target3 = torch.tensor([[0.0] * 3 + [0.5] * 3]), torch.tensor([[0.25] * 3 + [0.75] * 3])
    parts3 = box_loss(pred3, target3, l1_weight=2.0, giou_weight=3.0)
    assert parts3.terms["giou"].item() == pytest.approx(1 - (1 / 15 - 4 / 9), abs=1e-6)
    assert parts3.loss.item() == pytest.approx(2 * 0.25 + 3 * (1 - (1 / 15 - 4 / 9)), abs=1e-5)
    # Disjoint boxes: IoU 0, GIoU negative, loss above 1.
    far = box_loss(torch.tensor([[0, 0, 0.1, 0.1]]), torch.tensor([[0.9, 0.9, 1, 1]]), 0, 1)
    assert 1 < far.loss.item() < 2


def test_box_loss_rejects_mismatched_boxes_and_handles_no_boxes():
    with pytest.raises(ValueError, match="boxes must be"):
        box_loss(torch.zeros(2, 4), torch.zeros(2, 6))
    pred = BoxHead(HIDDEN)(torch.zeros(0, HIDDEN))
    empty = box_loss(pred, torch.zeros(0, 4))
    assert empty.loss.item() == 0 and empty.loss.requires_grad


@pytest.mark.parametrize("dim", [2, 3])
def test_box_head_trains_to_fit_synthetic_boxes(dim):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    states = torch.randn(32, HIDDEN, generator=gen)
    # Boxes at least 0.1 wide, so IoU is a fair measure of fit.
    centre = torch.rand(32, dim, generator=gen) * 0.6 + 0.2
    half = torch.rand(32, dim, generator=gen) * 0.15 + 0.05
    targets = torch.cat([centre - half, centre + half], dim=-1)
    head = BoxHead(HIDDEN, dim=dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = box_loss(head(states), targets).loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = box_loss(head(states), targets).loss.item()
        iou = paired_box_iou(head(states), targets)
    assert final < first / 4
    assert iou.mean().item() > 0.8


# --- grounding-token states --------------------------------------------------------------------


def test_gather_token_states_on_real_tokenized_input(tiny_model_path):
    # A fresh copy of the tiny model and tokenizer: the token is added in memory only.
    model, processor = load_vlm(tiny_model_path("qwen2_5_vl", "tiny"))
    tokenizer = processor.tokenizer
    assert tokenizer.add_tokens(["<|box|>"], special_tokens=True) == 1
    model.resize_token_embeddings(len(tokenizer))
    box_id = tokenizer.convert_tokens_to_ids("<|box|>")

    texts = ["the tear <|box|> is here", "two: <|box|>and<|box|> end of a longer line"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    states, rows = gather_token_states(hidden, batch["input_ids"], box_id)

    # Positions found independently, from the token strings: the new token is one whole token.
    expected = [
        (b, t)
        for b in range(len(texts))
        for t, token in enumerate(tokenizer.convert_ids_to_tokens(batch["input_ids"][b]))
        if token == "<|box|>"
    ]
    assert len(expected) == 3
    assert rows.tolist() == [b for b, _ in expected] == [0, 1, 1]
    for state, (b, t) in zip(states, expected, strict=True):
        torch.testing.assert_close(state, hidden[b, t], rtol=0, atol=0)
    assert states.shape == (3, HIDDEN)
    assert BoxHead(HIDDEN)(states).shape == (3, 4)


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


# --- persistence -------------------------------------------------------------------------------


def test_heads_save_and_load_round_trip(tmp_path):
    config = HeadsConfig(hidden_size=HIDDEN, box_dims=(3, 2), mask=True, mask_dim=16)
    assert config.head_names == ["box2d", "box3d", "mask"]
    assert config.tokens == ["<|box|>", "<|seg|>"]
    heads = build_heads(config)
    for seed, head in enumerate(heads.values()):
        _scramble(head, std=0.2, seed=seed)

    path = save_heads(heads, tmp_path / "ckpt" / "heads.safetensors", config)
    assert [p.name for p in path.parent.iterdir()] == ["heads.safetensors"]  # no temporary left
    states, grid = torch.randn(5, HIDDEN), torch.randn(2, 3, 4, HIDDEN)
    for loaded in (load_heads(path), load_heads(path, config)):
        assert list(loaded) == list(heads)
        with torch.no_grad():
            for name in ("box2d", "box3d"):
                torch.testing.assert_close(
                    loaded[name](states), heads[name](states), rtol=0, atol=0
                )
            torch.testing.assert_close(
                loaded["mask"](states, grid, (8, 8)),
                heads["mask"](states, grid, (8, 8)),
                rtol=0,
                atol=0,
            )

    with pytest.raises(ValueError, match="does not match heads"):
        load_heads(path, HeadsConfig(hidden_size=HIDDEN, box_dims=(2,)))
    bare = save_heads({"box2d": heads["box2d"]}, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="no HeadsConfig"):
        load_heads(bare)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_heads_config_file_round_trip(tmp_path, suffix):
    config = HeadsConfig(hidden_size=2048, box_dims=[3], mask=True, box_giou_weight=1.5)
    config.save(tmp_path / f"heads{suffix}")
    assert HeadsConfig.load(tmp_path / f"heads{suffix}") == config
    if suffix == ".json":
        assert json.loads((tmp_path / "heads.json").read_text())["box_dims"] == [3]
    with pytest.raises(ValueError, match="unknown HeadsConfig keys"):
        HeadsConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="box_dims"):
        HeadsConfig(hidden_size=8, box_dims=(4,))

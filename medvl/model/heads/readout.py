"""Running the grounding heads on a forward pass: states at head tokens, losses, predictions.

``MedVLM.forward`` (training) and ``MedVLM.answer`` (inference) share these steps::

    with capture_vision(model, on=mask_head) as captured:    # the tower's merged tokens
        out = model(**batch, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    boxes, loss = box_outputs(heads, config, hidden, input_ids, box_id, targets, dims)
    pictures = pictures_by_row(captured, batch, input_ids, model_config)
    logits, loss = mask_outputs(heads["mask"], config, hidden, input_ids, seg_id, pictures, ...)

The vision features are captured with a forward hook rather than computed again with
``heads.vision_feature_grid``: the mask head then reads exactly the features the LM saw, with
their gradients, at no extra cost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from medvl.model.heads import (
    HeadsConfig,
    box_loss,
    gather_token_states,
    mask_loss,
    masks_to_volume,
    pairs_to_frames,
)
from medvl.model.loading import unwrap
from medvl.model.replies import AnswerContext

Captured = list[tuple[torch.Tensor, torch.Tensor]]


def _device(modules: Any) -> torch.device:
    """Where the heads live (hidden states may sit on another GPU under ``device_map``)."""
    return next(p for m in modules for p in m.parameters()).device


def first_per_row(states: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first occurrence per batch row of ``gather_token_states``' output (which comes
    row by row, left to right): a reply that repeats ``<|box|>`` is read at the first."""
    if rows.numel() == 0:
        return states, rows
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    return states[first], rows[first]


@contextmanager
def capture_vision(model: nn.Module, on: bool = True) -> Iterator[Captured]:
    """Record ``(merged tokens, grid_thw)`` of every vision-tower call inside the block."""
    captured: Captured = []
    if not on:
        yield captured
        return

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        captured.append((output.pooler_output, grid))

    handle = unwrap(model).model.visual.register_forward_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def pictures_by_row(
    captured: Captured, inputs: Mapping[str, Any], input_ids: torch.Tensor, config: Any
) -> list[torch.Tensor | None]:
    """Each row's first picture as a feature grid ``(T', H', W', D)`` (None if it has none).

    Pictures are matched to rows by their placeholder tokens, in batch order; the layout of the
    merged tokens is the one ``heads.vision_feature_grid`` documents.
    """
    merge = config.vision_config.spatial_merge_size
    # Every Qwen-VL family encodes all images first, then all videos (one tower call each).
    kinds = [k for k, key in (("image", "pixel_values"), ("video", "pixel_values_videos"))
             if inputs.get(key) is not None]  # fmt: skip
    pictures: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
    for kind, (tokens, grid) in zip(kinds, captured, strict=False):
        sizes = (grid.prod(-1) // merge**2).tolist()
        pictures[kind] = [
            t.reshape(g[0], g[1] // merge, g[2] // merge, t.shape[-1])
            for t, g in zip(tokens.split(sizes), grid.tolist(), strict=True)
        ]
    token_of = {"image": config.image_token_id, "video": config.video_token_id}
    cursor = {"image": 0, "video": 0}
    result: list[torch.Tensor | None] = []
    for row in range(input_ids.shape[0]):
        first: list[tuple[int, torch.Tensor]] = []
        for kind in ("image", "video"):
            where = (input_ids[row] == token_of[kind]).nonzero()
            need = where.shape[0]
            if need and cursor[kind] < len(pictures[kind]):
                first.append((int(where[0]), pictures[kind][cursor[kind]]))
            while need > 0 and cursor[kind] < len(pictures[kind]):
                need -= pictures[kind][cursor[kind]].shape[:3].numel()
                cursor[kind] += 1
        result.append(min(first, key=lambda pg: pg[0])[1] if first else None)
    return result


def box_outputs(
    heads: Mapping[str, nn.Module],
    config: HeadsConfig,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    box_id: int,
    box_targets: torch.Tensor | None = None,
    box_dims: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box head predictions at each row's first ``<|box|>``, and their loss.

    Args:
        heads: The heads (``box2d`` / ``box3d`` used).
        config: Loss weights.
        hidden: ``(B, T, D)`` last-layer states.
        input_ids: ``(B, T)``.
        box_id: Id of ``<|box|>``.
        box_targets: ``(B, 6)``; 2D boxes in the first 4 columns.
        box_dims: ``(B,)`` 2 or 3 per row (0: no box); picks the head.

    Returns:
        ``(B, 6)`` predictions (zeros where none) and the L1 + GIoU loss averaged over boxes
        (a zero that still depends on the heads when there is none, so DDP sees them used).
    """
    states, rows = first_per_row(*gather_token_states(hidden, input_ids, box_id))
    device = _device(heads.values())
    states, rows = states.to(device), rows.to(device)
    if box_dims is None:
        box_dims = torch.zeros(input_ids.shape[0], dtype=torch.long)
    box_dims = box_dims.to(device)
    boxes = torch.zeros(input_ids.shape[0], 6, device=device)
    total, count = torch.zeros((), device=device), 0
    for name, head in heads.items():
        if not name.startswith("box"):
            continue
        chosen = box_dims[rows] == head.dim
        pred = head(states[chosen])
        boxes[rows[chosen], : 2 * head.dim] = pred.float()
        target = pred.detach() if box_targets is None else \
            box_targets.to(device)[rows[chosen], : 2 * head.dim]  # fmt: skip
        n = int(chosen.sum())
        part = box_loss(pred, target, config.box_l1_weight, config.box_giou_weight).loss
        total, count = total + part * max(n, 1), count + n
    return boxes, total / max(count, 1)


def mask_outputs(
    head: nn.Module,
    config: HeadsConfig,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    seg_id: int,
    pictures: Sequence[torch.Tensor | None],
    mask_targets: Sequence[torch.Tensor | None] | None = None,
) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Mask logits at each row's first ``<|seg|>`` on the row's picture, and their loss.

    Returns:
        Per row the logits ``(T, H, W)`` (frames for a video with a target, else grid steps; the
        target's size, else the grid's) or None, and the Dice + BCE loss averaged over masks (a
        zero that depends on the head when there is none).
    """
    states, rows = first_per_row(*gather_token_states(hidden, input_ids, seg_id))
    device = _device([head])
    logits: list[torch.Tensor | None] = [None] * input_ids.shape[0]
    losses = []
    for state, row in zip(states, rows.tolist(), strict=True):
        target = None if mask_targets is None else mask_targets[row]
        grid = pictures[row]
        if grid is None:
            continue
        size = tuple(target.shape[-2:]) if target is not None else tuple(grid.shape[1:3])
        out = head(state.to(device), grid.to(device), out_size=size)[0]  # (T', H, W)
        if target is not None and out.shape[0] != target.shape[0]:
            out = pairs_to_frames(out, target.shape[0])  # a video: frame pairs -> frames
        logits[row] = out
        if target is not None:
            target = target[None].to(device)
            parts = mask_loss(out[None], target, config.mask_dice_weight, config.mask_bce_weight)
            losses.append(parts.loss)
    if losses:
        return logits, torch.stack(losses).mean()
    return logits, sum(p.sum() for p in head.parameters()) * 0.0


def mask_in_scan(
    head: nn.Module, state: torch.Tensor, grid: torch.Tensor, context: AnswerContext
) -> torch.Tensor:
    """The mask head's prediction in the scan's array layout, thresholded at 0.5.

    2D: the picture is the scan as stored, so the ``(H, W)`` picture mask is the ``(W, H)``
    scan mask transposed. Frames: each frame pair's mask goes to both frames, then through the
    view's coordinate map into the volume (``masks_to_volume``).
    """
    device = _device([head])
    state, grid = state.to(device), grid.to(device)
    if context.view is None:
        w, h = context.scan_shape
        probs = head(state, grid, out_size=(h, w))[0, 0].sigmoid()
        return (probs.T > 0.5).cpu()
    w, h = context.view.size
    probs = head(state, grid, out_size=(h, w))[0].sigmoid()  # (T', h, w)
    return masks_to_volume(pairs_to_frames(probs, context.n_frames), context.view) > 0.5


def extend_with_reply(
    inputs: Mapping[str, torch.Tensor], reply: torch.Tensor, extra: Sequence[int]
) -> dict[str, torch.Tensor]:
    """A prompt encoding (batch of one) followed by the reply's ids and extra tokens."""
    ids = inputs["input_ids"]
    tail = torch.cat([reply.to(ids.dtype), torch.tensor(list(extra), dtype=ids.dtype)])[None]
    out = dict(inputs, input_ids=torch.cat([ids, tail], dim=1))
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if "mm_token_type_ids" in inputs:  # text tokens: type 0
        types = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(tail, dtype=types.dtype)], 1)
    return out

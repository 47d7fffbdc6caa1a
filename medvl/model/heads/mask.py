"""``MaskHead``: a mask decoded from the vision tower's feature grid and a ``<|seg|>`` state.

In the spirit of LISA, without SAM: the ``<|seg|>`` token's hidden state becomes a query, every
merged vision token a key, and a cell's mask logit is their scaled dot product, refined by two
small convolutions over the grid and upsampled to the picture::

    <|seg|> state (D) ---- MLP ----------------------------> q (C)
    grid (T', H', W', Dv) -- LayerNorm, Linear --> k (C) --+--> k . q / sqrt(C) + b --> coarse
                                                           +--> [k * q, coarse] -> conv3x3, GELU,
                                                                conv3x3 -> + coarse -> logits
    logits (T', H', W') -- bilinear --> (T', H, W)

The grid comes from :func:`vision_feature_grid`: the merged tokens that Qwen-VL feeds its LM, one
per ``merge x merge`` patches (28 px on Qwen2/2.5-VL, 32 px on Qwen3-VL), so the coarse mask is that
fine and the convolutions and the bilinear upsampling smooth it.

**Frames and pairs.** A video (a volume's frames) has temporal patch 2: frames ``2t`` and
``2t + 1`` share grid step ``t``, so a ``(T', H, W)`` prediction has one mask per frame pair;
:func:`medvl.model.heads.pairs_to_frames` gives it to both frames before
:func:`medvl.model.heads.masks_to_volume` puts frames back into the volume. An image is one step
(``T' = 1``, the image repeated over the temporal patch).

**Resize.** The processor resizes the whole picture onto the whole resized image (no crop or
padding), so normalised positions are the same in the displayed frame, the resized image and the
grid. Upsampling the logits with ``align_corners=False`` (pixel edges on edges) to the displayed
frame's ``(height, width)`` therefore puts every logit where the frame shows it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medvl.model.loading import unwrap


class MaskHead(nn.Module):
    """Decode mask logits from a vision feature grid, conditioned on a ``<|seg|>`` hidden state.

    Args:
        hidden_size: Width ``D`` of the LM hidden states (the ``<|seg|>`` state).
        vision_size: Width ``Dv`` of the merged vision tokens; default ``hidden_size`` (true for
            every Qwen-VL family: the merger projects to the LM width).
        dim: Width ``C`` of the shared query/key space.
        refine_size: Channels of the convolutional refinement; 0 turns it off.
    """

    def __init__(
        self,
        hidden_size: int,
        vision_size: int | None = None,
        dim: int = 256,
        refine_size: int = 32,
    ) -> None:
        super().__init__()
        vision_size = vision_size or hidden_size
        self.hidden_size, self.vision_size, self.dim = hidden_size, vision_size, dim
        self.query = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, dim)
        )
        # Merged vision tokens are not normalised (their scale varies across layers and models).
        self.key = nn.Sequential(nn.LayerNorm(vision_size), nn.Linear(vision_size, dim))
        self.bias = nn.Parameter(torch.zeros(()))
        self.refine: nn.Module | None = None
        if refine_size:
            self.refine = nn.Sequential(
                nn.Conv2d(dim + 1, refine_size, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(refine_size, 1, 3, padding=1),
            )
            # Start as the plain dot product; the refinement learns a residual.
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(
        self,
        queries: torch.Tensor,
        grid: torch.Tensor,
        out_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Mask logits of each query on one image's or video's feature grid.

        Args:
            queries: ``(N, D)`` ``<|seg|>`` hidden states of the N masks asked of this picture
                (or ``(D,)`` for one).
            grid: ``(T', H', W', Dv)`` feature grid from :func:`vision_feature_grid`.
            out_size: ``(height, width)`` to upsample to, e.g. the displayed frame's size; default
                the grid's own ``(H', W')``.

        Returns:
            ``(N, T', height, width)`` logits (apply a sigmoid for probabilities).
        """
        if queries.ndim == 1:
            queries = queries[None]
        if grid.ndim != 4:
            raise ValueError(f"grid must be (T', H', W', Dv), got {tuple(grid.shape)}")
        dtype = self.key[1].weight.dtype
        q = self.query(queries.to(dtype))  # (N, C)
        k = self.key(grid.to(dtype))  # (T', H', W', C)
        n, (t, h, w, c) = q.shape[0], k.shape
        coarse = torch.einsum("thwc,nc->nthw", k, q) / math.sqrt(c) + self.bias
        logits = coarse
        if self.refine is not None:
            mixed = torch.einsum("thwc,nc->ntchw", k, q)  # query-weighted features per cell
            x = torch.cat([mixed, coarse[:, :, None]], dim=2).reshape(n * t, c + 1, h, w)
            logits = coarse + self.refine(x).reshape(n, t, h, w)
        if out_size is not None and tuple(out_size) != (h, w):
            logits = F.interpolate(
                logits, size=tuple(out_size), mode="bilinear", align_corners=False
            )
        return logits


def _vision_tower(model: nn.Module) -> nn.Module:
    """The Qwen-VL vision encoder inside a model, a peft wrapper of it, or the encoder itself."""
    if hasattr(model, "spatial_merge_size"):
        return model
    model = unwrap(model)
    inner = getattr(model, "model", model)  # *ForConditionalGeneration -> *Model
    visual = getattr(inner, "visual", None)
    if visual is None:
        raise TypeError(f"{type(model).__name__} has no Qwen-VL vision tower at .model.visual")
    return visual


def vision_feature_grid(
    model: nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor
) -> list[torch.Tensor]:
    """Run the vision tower and lay its merged tokens out as one grid per image or video.

    What ``model.model.visual(pixel_values, grid_thw=...)`` returns in transformers 5.24: a
    ``BaseModelOutputWithPooling`` (Qwen3-VL: ``...WithDeepstackFeatures``) whose
    ``pooler_output`` holds the merged tokens the LM sees, ``(sum(t * h * w) / merge**2, D_lm)``,
    in raster order ``(t, h / merge, w / merge)`` per item: the processor lays patches out
    merge-block by merge-block, the merger folds each block into one token, and Qwen2.5-VL undoes
    its window-attention reordering before returning. (``last_hidden_state`` holds the unmerged
    patches, ``(sum(t * h * w), D_vision)``, block-ordered, and on Qwen2.5-VL still in window
    order: not used here.)

    Gradients flow unless the caller wraps this in ``torch.no_grad()`` (a frozen tower).

    Args:
        model: A Qwen2-VL, Qwen2.5-VL or Qwen3-VL model from :func:`medvl.model.load_vlm` (or a
            peft wrapper of it, or its ``.model.visual``).
        pixel_values: The processor's ``pixel_values`` or ``pixel_values_videos``.
        grid_thw: The matching ``image_grid_thw`` or ``video_grid_thw``, ``(n, 3)`` in patches.

    Returns:
        One ``(T', H', W', D)`` tensor per row of ``grid_thw``: ``T' = t`` (frame pairs of a
        video, 1 for an image), ``H' = h // merge``, ``W' = w // merge``, ``D`` the LM hidden size.
    """
    visual = _vision_tower(model)
    out = visual(pixel_values.to(visual.dtype), grid_thw=grid_thw, return_dict=True)
    m = visual.spatial_merge_size
    sizes = (grid_thw.prod(-1) // m**2).tolist()
    return [
        tokens.reshape(t, h // m, w // m, tokens.shape[-1])
        for tokens, (t, h, w) in zip(out.pooler_output.split(sizes), grid_thw.tolist(), strict=True)
    ]

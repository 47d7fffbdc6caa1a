"""Grounding heads: optional add-ons that read a Qwen-VL model's states (MedVLM owns them).

Without heads a MedVLM is a plain VLM. With them, special tokens in the answer trigger a head on
the LM's last-layer hidden state at the token:

* ``<|box|>`` -> :class:`BoxHead` -> a normalised box ``[x1, y1, x2, y2]`` (2D image) or
  ``[x1, y1, z1, x2, y2, z2]`` (3D volume, RAS array axes), always valid. Loss: :func:`box_loss`
  (L1 + GIoU, MONAI, 2D and 3D).
* ``<|seg|>`` -> :class:`MaskHead` on the vision tower's merged feature grid
  (:func:`vision_feature_grid`) -> mask logits per grid step, upsampled to the frame. Loss:
  :func:`mask_loss` (Dice + BCE, MONAI). A volume's frame-pair masks go back to the volume with
  :func:`pairs_to_frames` and :func:`masks_to_volume` (the view's own coordinate map).

Wiring, for the MedVLM author::

    config = HeadsConfig(hidden_size=model.config.text_config.hidden_size, box_dims=(2, 3),
                         mask=True)
    tokenizer.add_tokens(config.tokens, special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    heads = build_heads(config)

    out = model(**inputs, output_hidden_states=True)
    hidden = out.hidden_states[-1]                                          # (B, T, D)
    states, rows = gather_token_states(hidden, inputs["input_ids"], box_id)   # (N, D), (N,)
    boxes = heads["box2d"](states)                                          # (N, 4)
    loss = box_loss(boxes, target_boxes, config.box_l1_weight, config.box_giou_weight).loss

    grids = vision_feature_grid(model, inputs["pixel_values"], inputs["image_grid_thw"])
    seg, rows = gather_token_states(hidden, inputs["input_ids"], seg_id)
    logits = heads["mask"](seg[rows == 0], grids[0], out_size=(height, width))  # (n, T', H, W)

    save_heads(heads, folder / "heads.safetensors", config); config.save(folder / "heads.yaml")
    heads = load_heads(folder / "heads.safetensors")

``grids[i]`` is the i-th image (or video) of the batch in processor order; with one picture per
sample it is row ``i``'s.
"""

from medvl.model.heads.box import BoxHead
from medvl.model.heads.config import (
    HeadsConfig,
    build_heads,
    heads_state_dict,
    load_heads,
    save_heads,
)
from medvl.model.heads.losses import LossParts, box_loss, dice_score, mask_loss
from medvl.model.heads.mask import MaskHead, vision_feature_grid
from medvl.model.heads.tokens import gather_token_states
from medvl.model.heads.volume import masks_to_volume, pairs_to_frames

__all__ = [
    "BoxHead",
    "HeadsConfig",
    "LossParts",
    "MaskHead",
    "box_loss",
    "build_heads",
    "dice_score",
    "gather_token_states",
    "heads_state_dict",
    "load_heads",
    "mask_loss",
    "masks_to_volume",
    "pairs_to_frames",
    "save_heads",
    "vision_feature_grid",
]

"""From questions and dataset items to model inputs: prompts, SFT targets, labels, padding.

One code path encodes a question for answering and for training, so the prompt a model is
trained on is token for token the prompt it is asked with::

    encoded = encode_example(processor, family, example, settings)   # one question
    batch = merge_encodings([e.inputs for e in encoded], pad_id, "left")  # generation
    batch = collate_examples(processor, family, items, settings)      # training, right padding

An SFT example is the prompt exactly as :func:`medvl.model.generate.prepare_inputs` renders it
for generation (chat template, processor, Qwen3-VL video fix), followed by the target's tokens
and ``<|im_end|>``. Appending token ids (rather than rendering prompt and answer as one text)
makes the label boundary exact: ``labels`` are -100 on the prompt and padding, and the target's
ids (``<|im_end|>`` included) on the assistant turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medvl.model.inputs import Shown, build_messages, picture_sizes, prepare_inputs, show_scan
from medvl.model.prompts import PromptSettings, build_prompt, build_target
from medvl.model.replies import AnswerContext
from medvl.scans.views import FrameView
from medvl.scans.views.render import render_plane

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"  # every Qwen-VL chat template closes a turn with it

# Per-token tensors are padded; everything else (pixels, grids, fps) is per picture: concatenated.
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "labels": -100}


@dataclass(frozen=True)
class HeadTokens:
    """Which grounding tokens go into SFT targets (none when the model has no heads).

    Attributes:
        box: The box token (``<|box|>``) if a box head exists.
        box_dims: Dimensions the box heads handle, ``(2,)``, ``(3,)`` or ``(2, 3)``.
        seg: The mask token (``<|seg|>``) if a mask head exists.
    """

    box: str | None = None
    box_dims: tuple[int, ...] = ()
    seg: str | None = None


@dataclass
class Encoded:
    """One encoded question (batch of one) and what goes with it.

    Attributes:
        inputs: The processor's tensors; with a target also ``labels``.
        context: Facts to read the reply back into scan coordinates.
        target: The assistant text trained on (None when answering).
        box: The target box in scan coordinates, or None.
        mask: The binary target mask per frame ``(T, H, W)`` (``T = 1`` for an image), or None.
    """

    inputs: dict[str, torch.Tensor]
    context: AnswerContext
    target: str | None = None
    box: list[float] | None = None
    mask: torch.Tensor | None = None


def sample_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """The sample of an item as a flat dict, its box replaced by the item's own ``box`` (the
    dataset maps the sample's box onto the preprocessed scan)."""
    sample = item.get("sample")
    if sample is None:
        keys = ("question", "options", "answer", "answer_type", "modality", "anatomy", "box")
        fields = {k: item.get(k) for k in keys if item.get(k) is not None}
    elif hasattr(sample, "to_dict"):
        fields = sample.to_dict()
        fields["meta"] = dict(getattr(sample, "meta", {}) or {})
    else:
        fields = dict(sample)
    if "box" in item:
        fields["box"] = item["box"]
    if not fields.get("answer_type"):
        fields["answer_type"] = "choice" if fields.get("options") else "open"
    return fields


def _pictures(item: Mapping[str, Any], settings: PromptSettings) -> Shown:
    """The item's picture: from its ``messages`` (the dataset's view) or shown from ``scan``."""
    messages = item.get("messages")
    if messages is None:
        if item.get("scan") is None:
            raise ValueError("an item needs 'messages' (with an image or video) or a 'scan'")
        return show_scan(item["scan"], settings)
    content = [
        c
        for m in messages
        if m.get("role") == "user" and not isinstance(m.get("content"), str)
        for c in m["content"]
        if c.get("type") in ("image", "video") or c.get("image") is not None
        or c.get("video") is not None
    ]  # fmt: skip
    if not content:
        raise ValueError("the item's user message holds no image or video")
    scan, view = item.get("scan"), item.get("view")
    if scan is not None:
        shape = tuple(int(s) for s in scan.shape[1:])
    else:
        picture = content[0].get("image") or content[0]["video"][0]
        shape = tuple(picture.size)
    ndim = 3 if view is not None or len(shape) == 3 else 2
    # Several pictures of one study: boxes and masks refer to the first.
    return Shown(content[0], view, ndim, shape, others=content[1:])


def insert_head_tokens(target: str, tokens: Sequence[str]) -> str:
    """Put grounding tokens at the start of the answer block: ``<answer><|box|>...``.

    At the start, the head reads a state that has seen the image and the reasoning but not the
    text box the LM writes next, so it must locate the finding itself rather than copy the text.
    """
    if not tokens:
        return target
    joined = "".join(tokens)
    if "<answer>" in target:
        return target.replace("<answer>", "<answer>" + joined, 1)
    return joined + target


def binary_mask(mask: Any, fields: Mapping[str, Any]) -> torch.Tensor:
    """A label map -> the finding's binary mask (``meta.mask_label`` if given, else any label)."""
    if not torch.is_tensor(mask):
        mask = torch.as_tensor(np.asarray(mask))
    elif hasattr(mask, "as_tensor"):  # a MetaTensor: plain values, no meta tracking
        mask = mask.as_tensor()
    label = (fields.get("meta") or {}).get("mask_label", fields.get("mask_label"))
    return (mask == label) if label is not None else (mask > 0)


def mask_target(mask: Any, shown: Shown, fields: Mapping[str, Any]) -> torch.Tensor | None:
    """The mask as the model sees its picture: ``(T, H, W)`` float, one per frame (``T = 1`` for
    an image). None for views without a per-pixel inverse here (montage, slice, MIP)."""
    binary = binary_mask(mask, fields)
    if binary.ndim == shown.scan_ndim + 1:
        binary = binary[0]  # drop the channel axis
    if shown.scan_ndim == 2 and shown.view is None:
        w, h = shown.picture_size
        image = binary.T.float()[None, None]  # scan (W, H) -> picture rows (H, W)
        if tuple(image.shape[-2:]) != (h, w):
            image = F.interpolate(image, size=(h, w), mode="nearest")
        return image[0]
    if isinstance(shown.view, FrameView):
        view = shown.view
        volume = (binary.cpu().numpy().astype(np.uint8) * 255)[None]
        frames = [
            np.asarray(render_plane(np.take(volume, k, axis=view.axis + 1), view.plane, "nearest"))
            for k in view.slice_indices
        ]
        return torch.from_numpy(np.stack(frames)[..., 0] > 127).float()
    return None


def encode_example(
    processor: Any,
    family: str,
    item: Mapping[str, Any],
    settings: PromptSettings,
    heads: HeadTokens | None = None,
    with_target: bool = False,
) -> Encoded:
    """Encode one question (and, for training, its target) as a batch of one.

    Args:
        processor: The model's processor.
        family: The model family.
        item: See :meth:`medvl.model.MedVLM.collate` for the keys.
        settings: Prompt and view settings.
        heads: Grounding tokens to insert in the target.
        with_target: Append the target (``build_target``) and make ``labels``.

    Returns:
        An :class:`Encoded`.
    """
    fields = sample_fields(item)
    shown = _pictures(item, settings)
    prompt = build_prompt(fields, family, view=shown.view, reasoning=settings.reasoning)
    messages = build_messages(
        prompt.user_text, system=prompt.system, pictures=[shown.content, *shown.others]
    )
    inputs = dict(prepare_inputs(processor, messages, settings.video_fps))
    context = AnswerContext(
        scan_ndim=shown.scan_ndim,
        view=shown.view,
        image_size=picture_sizes(inputs, processor)[0],
        answer_type=fields.get("answer_type"),
        scan_shape=shown.scan_shape,
        n_frames=shown.n_frames,
    )
    encoded = Encoded(inputs, context)
    if not with_target:
        return encoded

    heads = heads or HeadTokens()
    tokens = []
    box = fields.get("box")
    if box is not None and heads.box and len(box) // 2 in heads.box_dims:
        encoded.box = [float(v) for v in box]
        tokens.append(heads.box)
    if heads.seg and item.get("mask") is not None:
        encoded.mask = mask_target(item["mask"], shown, fields)
        if encoded.mask is not None:
            tokens.append(heads.seg)
    target = build_target(fields, family, image_size=context.image_size,
                          reasoning=settings.reasoning)  # fmt: skip
    encoded.target = insert_head_tokens(target, tokens)
    ids = processor.tokenizer(encoded.target + END_OF_TURN, add_special_tokens=False)["input_ids"]
    target_ids = torch.tensor([ids], dtype=inputs["input_ids"].dtype)
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], target_ids], dim=1)
    inputs["attention_mask"] = torch.cat(
        [inputs["attention_mask"], torch.ones_like(target_ids)], dim=1
    )
    if "mm_token_type_ids" in inputs:  # the target is text: type 0
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(target_ids)], dim=1
        )
    labels = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
    labels[:, prompt_len:] = target_ids
    inputs["labels"] = labels
    return encoded


def merge_encodings(
    encodings: Sequence[Mapping[str, torch.Tensor]], pad_token_id: int, padding_side: str
) -> dict[str, torch.Tensor]:
    """Batch single-example encodings: pad per-token tensors, concatenate per-picture ones.

    Args:
        encodings: Processor outputs of batch size 1 each (``labels`` allowed).
        pad_token_id: Id that fills ``input_ids`` padding.
        padding_side: ``"left"`` for generation (new tokens follow every prompt directly),
            ``"right"`` for training.

    Returns:
        One batch: ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``labels`` padded;
        ``pixel_values``, ``image_grid_thw``, ``pixel_values_videos``, ``video_grid_thw``,
        ``second_per_grid_ts`` concatenated in example order (the order the model's
        placeholder tokens are filled in).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(e["input_ids"].shape[1] for e in encodings)
    keys = list(dict.fromkeys(k for e in encodings for k in e))
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        if key in _PAD_VALUES:
            value = pad_token_id if key == "input_ids" else _PAD_VALUES[key]
            rows = []
            for e in encodings:
                row = e[key]
                gap = (0, length - row.shape[1]) if padding_side == "right" else \
                    (length - row.shape[1], 0)  # fmt: skip
                rows.append(F.pad(row, gap, value=value))
            batch[key] = torch.cat(rows, dim=0)
        else:
            batch[key] = torch.cat([torch.as_tensor(e[key]) for e in encodings if key in e], dim=0)
    return batch


def collate_examples(
    processor: Any,
    family: str,
    items: Sequence[Mapping[str, Any]],
    settings: PromptSettings,
    heads: HeadTokens | None = None,
) -> dict[str, Any]:
    """A training batch (right padding) from items; see :meth:`medvl.model.MedVLM.collate`."""
    encoded = [
        encode_example(processor, family, item, settings, heads, with_target=True) for item in items
    ]
    batch: dict[str, Any] = merge_encodings(
        [e.inputs for e in encoded], processor.tokenizer.pad_token_id, "right"
    )
    box_targets = torch.zeros(len(encoded), 6)
    box_dims = torch.zeros(len(encoded), dtype=torch.long)
    for row, e in enumerate(encoded):
        if e.box is not None:
            box_targets[row, : len(e.box)] = torch.tensor(e.box)
            box_dims[row] = len(e.box) // 2
    if heads is not None and heads.box:
        batch["box_targets"], batch["box_dims"] = box_targets, box_dims
    if heads is not None and heads.seg:
        batch["mask_targets"] = [e.mask for e in encoded]
    return batch


@dataclass
class Collator:
    """``MedVLM.collate`` without the model: picklable, for DataLoader workers that spawn."""

    processor: Any
    family: str
    settings: PromptSettings
    heads: HeadTokens = field(default_factory=HeadTokens)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return collate_examples(self.processor, self.family, items, self.settings, self.heads)

"""What a scan looks like to the model, and reading a reply back into medvl's coordinates.

:class:`medvl.model.MedVLM` answers a question in three steps, each a function here or in
:mod:`medvl.model.encoding` so that tests (and the evaluator) can run any one of them alone::

    shown = show_scan(scan, ViewSettings("frames", 16))  # picture + view + coordinate facts
    ... prompt, processor, generate ...
    answer = parse_answer(raw, family, context)            # reasoning, answer, box (scan coords)

The context (:class:`AnswerContext`) carries what a box needs to travel from the reply's text to
the scan: the picture's size as the processor resized it (Qwen2.5-VL boxes are pixels of that),
and the view whose coordinate map leads from a frame, tile or slice back to the volume.

Boxes and masks in an :class:`Answer` are always in medvl's scan convention (see
``medvl.scans.views``): ``[x1, y1, x2, y2]`` normalised on a 2D scan, ``[x1, y1, z1, x2, y2, z2]``
normalised on a volume's RAS array axes, and masks shaped like the scan's spatial axes
(``(W, H)`` or ``(X, Y, Z)``), whatever the family.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from medvl.model.grounding import parse_box, parse_box_3d, parse_boxes
from medvl.model.prompts import parse_response
from medvl.scans.views import (
    FrameView,
    MIPView,
    MontageView,
    SliceView,
    ViewSettings,
    scan_to_image,
    show_volume,
)

# "frame 3", "Frame #3", '"frame": 3' — the marker that ties a 2D box to one video frame.
_FRAME_RE = re.compile(r"""\bframe["']?\s*(?:#|no\.?|number)?\s*[:=]?\s*(\d+)""", re.IGNORECASE)


@dataclass
class Answer:
    """A model's answer to one question about one scan.

    Attributes:
        reasoning: Text of the ``<think>`` block, or None.
        answer: Text of the ``<answer>`` block (the bare reply if untagged), or None.
        box: The box in medvl's normalised scan coordinates (4 numbers for a 2D scan, 6 for a
            volume), from the box head or from the reply's text (see ``box_source``), or None.
        mask: The mask head's binary mask, a bool tensor shaped like the scan's spatial axes
            (``(W, H)`` or ``(X, Y, Z)``), or None.
        raw: The generated text, special tokens kept except end-of-turn and padding.
        box_source: ``"head"``, ``"text"`` or None (no box).
        well_formed: The reply has the asked ``<think>``/``<answer>`` shape.
    """

    reasoning: str | None
    answer: str | None
    box: list[float] | None
    mask: torch.Tensor | None
    raw: str
    box_source: str | None = None
    well_formed: bool = False


@dataclass
class Shown:
    """A scan made ready for the model: its picture, the view and the facts to map back.

    Attributes:
        content: The message content entry: ``{"type": "image", "image": PIL}`` or
            ``{"type": "video", "video": [PIL frames]}``.
        view: The ``FrameView`` / ``MontageView`` / ``SliceView`` / ``MIPView`` of a volume;
            None for a 2D scan or image.
        scan_ndim: 2 or 3: the dimensionality of the scan's boxes.
        scan_shape: Spatial shape of the scan: ``(W, H)`` or ``(X, Y, Z)``.
        others: Further pictures of the same study (message entries), shown after ``content``;
            boxes and masks refer to ``content``.
    """

    content: dict[str, Any]
    view: Any
    scan_ndim: int
    scan_shape: tuple[int, ...]
    others: list[dict[str, Any]] = field(default_factory=list)

    @property
    def picture_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image, or of each video frame, before the processor."""
        picture = self.content.get("image") or self.content["video"][0]
        return picture.size

    @property
    def n_frames(self) -> int:
        """Frames of the video (1 for an image)."""
        return len(self.content["video"]) if "video" in self.content else 1


@dataclass
class AnswerContext:
    """What :func:`parse_answer` needs to put a reply's box into scan coordinates.

    Attributes:
        scan_ndim: 2 or 3.
        view: The volume's view (None for 2D).
        image_size: ``(width, height)`` of the picture (each frame, for a video) after the
            processor's resize: the pixels a Qwen2.5-VL box counts.
        answer_type: The question's type (``grounding`` turns on the head box, see MedVLM).
        scan_shape: Spatial shape of the scan, for masks.
        n_frames: Frames of the video (1 for an image).
    """

    scan_ndim: int
    view: Any
    image_size: tuple[int, int]
    answer_type: str | None = None
    scan_shape: tuple[int, ...] | None = None
    n_frames: int = 1


def as_scan(scan_or_image: Any) -> torch.Tensor | Image.Image:
    """A path, a tensor / array scan or a PIL image -> a channel-first tensor or the image.

    Args:
        scan_or_image: A file or DICOM folder (read with ``medvl.scans.load_scan``), a MONAI
            ``MetaTensor`` / tensor / array shaped ``(C, W, H)`` (2D) or ``(C, X, Y, Z)`` (3D) —
            a channel-less ``(W, H)`` gets one — or a PIL image.

    Returns:
        The tensor (MetaTensors keep their spacing) or the PIL image.

    Raises:
        ValueError: For a tensor of another rank.
        TypeError: For anything else.
    """
    if isinstance(scan_or_image, Image.Image):
        return scan_or_image
    if isinstance(scan_or_image, (str, os.PathLike)):
        from medvl.scans import load_scan

        return load_scan(scan_or_image)
    if isinstance(scan_or_image, np.ndarray):
        scan_or_image = torch.from_numpy(np.ascontiguousarray(scan_or_image))
    if not isinstance(scan_or_image, torch.Tensor):
        raise TypeError(
            "expected a path, a scan tensor (C, W, H) / (C, X, Y, Z) or a PIL image, got "
            f"{type(scan_or_image).__name__}"
        )
    if scan_or_image.ndim == 2:
        scan_or_image = scan_or_image[None]
    if scan_or_image.ndim not in (3, 4):
        raise ValueError(
            f"a scan is (C, W, H) or (C, X, Y, Z); got shape {tuple(scan_or_image.shape)}"
        )
    return scan_or_image


def show_scan(scan_or_image: Any, settings: ViewSettings | None = None) -> Shown:
    """Turn a scan into the picture the model sees, with the view that maps it back.

    Args:
        scan_or_image: Anything :func:`as_scan` takes.
        settings: How a volume is shown (default ``ViewSettings()``: 16 axial frames); a 2D
            scan or image is always one picture.

    Returns:
        A :class:`Shown`.
    """
    settings = settings or ViewSettings()
    scan = as_scan(scan_or_image)
    if isinstance(scan, Image.Image):
        image = scan.convert("RGB")
        return Shown({"type": "image", "image": image}, None, 2, image.size)
    shape = tuple(int(s) for s in scan.shape[1:])
    if scan.ndim == 3:
        # scan_to_image shows the array as stored, so a box on it is already a scan box.
        return Shown({"type": "image", "image": scan_to_image(scan)}, None, 2, shape)
    view = show_volume(scan, settings)
    if isinstance(view, FrameView):
        return Shown({"type": "video", "video": view.frames}, view, 3, shape)
    return Shown({"type": "image", "image": view.image}, view, 3, shape)


def picture_sizes(inputs: Mapping[str, Any], processor: Any) -> list[tuple[int, int]]:
    """``(width, height)`` after the processor's resize of every picture, images then videos.

    Read from the processor's own output (``*_grid_thw`` counts patches), so it is exactly the
    size the model saw, whatever the processor's pixel limits.
    """
    sizes = []
    for key, sub in (("image_grid_thw", "image_processor"), ("video_grid_thw", "video_processor")):
        grid = inputs.get(key)
        if grid is None:
            continue
        patch = getattr(processor, sub, processor.image_processor).patch_size
        sizes += [(int(w) * patch, int(h) * patch) for _, h, w in grid.tolist()]
    return sizes


def strip_tokens(text: str, tokens: Sequence[str]) -> str:
    """``text`` without the given special tokens (``<|box|>``, ``<|seg|>``)."""
    for token in tokens:
        text = text.replace(token, "")
    return text


def _frame_boxes(text: str, family: str, image_size: Sequence[int]) -> dict[int, list[float]]:
    """2D boxes tied to frames by a ``frame <n>`` marker before them, per frame (union)."""
    marks = list(_FRAME_RE.finditer(text))
    found: dict[int, list[list[float]]] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        box = parse_box(text[mark.end() : end], family, image_size)
        if box is not None:
            found.setdefault(int(mark.group(1)), []).append(box)
    return {
        frame: [min(b[0] for b in bs), min(b[1] for b in bs),
                max(b[2] for b in bs), max(b[3] for b in bs)]
        for frame, bs in found.items()
    }  # fmt: skip


def text_box(text: str, family: str, context: AnswerContext) -> list[float] | None:
    """The first box in ``text``, in medvl's normalised scan coordinates, or None.

    * 2D scan or image: the family's native 2D box on the resized image.
    * Volume: a ``bbox_3d`` first (already volume coordinates). Else 2D boxes through the view's
      coordinate map: frames: boxes after a ``frame <n>`` marker go on those frames; a bare 2D
      box is taken as seen on every frame (in-plane extent exact, through-plane the whole shown
      range); montage: boxes in montage pixels, each assigned to the tile under its centre;
      slice / MIP: the picture's box, through-plane the shown slab.

    Never raises on the text; a box the view cannot place is None.
    """
    if context.scan_ndim == 2:
        return parse_box(text, family, context.image_size)
    box = parse_box_3d(text)
    if box is not None:
        return box
    view = context.view
    try:
        if isinstance(view, FrameView):
            per_frame = _frame_boxes(text, family, context.image_size)
            per_frame = {f: b for f, b in per_frame.items() if 0 <= f < len(view.slice_indices)}
            if not per_frame:
                bare = parse_box(text, family, context.image_size)
                if bare is None:
                    return None
                per_frame = {0: bare, len(view.slice_indices) - 1: bare}
            return view.box_from_frames(per_frame)
        if isinstance(view, MontageView):
            boxes = parse_boxes(text, family, context.image_size)
            if not boxes:
                return None
            w, h = view.image.size  # normalised on the resized montage = on the montage
            return view.box_from_tiles([[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in boxes])
        if isinstance(view, (SliceView, MIPView)):
            flat = parse_box(text, family, context.image_size)
            return None if flat is None else view.box_from_image(flat)
    except (ValueError, IndexError):  # e.g. a montage box centred on a gap
        return None
    return None


def parse_answer(
    raw: str,
    family: str,
    context: AnswerContext,
    head_tokens: Sequence[str] = ("<|box|>", "<|seg|>"),
) -> Answer:
    """Read reasoning, answer and a text box from a reply; the text path of ``MedVLM.answer``.

    Args:
        raw: The generated text (special tokens may be in it).
        family: The model family (decides what box numbers mean).
        context: The picture's resized size and the view (see :class:`AnswerContext`).
        head_tokens: Grounding tokens, removed before parsing.

    Returns:
        An :class:`Answer` with ``box`` from the ``<answer>`` block (else from anywhere in the
        reply), in scan coordinates; ``mask`` is None (heads fill it in ``MedVLM.answer``).
    """
    text = strip_tokens(raw, head_tokens)
    parsed = parse_response(text)
    box = None
    if parsed.answer is not None:
        box = text_box(parsed.answer, family, context)
    if box is None:
        box = text_box(text, family, context)
    return Answer(
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        box=box,
        mask=None,
        raw=raw,
        box_source=None if box is None else "text",
        well_formed=parsed.well_formed,
    )

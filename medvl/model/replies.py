"""Reading a model's reply: the ``<think>``/``<answer>`` shape, then the answer and its box in
medvl's scan coordinates. The one home of reply parsing.

* :func:`parse_response`: reasoning, answer and whether the reply has the asked shape; plain
  text in, no model needed (the evaluator and the rewards read stored replies with it).
* :func:`parse_answer`: the same, plus the box a reply writes, carried back to the scan through
  the :class:`AnswerContext` (the picture's size as the processor resized it, for Qwen2.5-VL's
  pixel boxes, and the view whose coordinate map leads from a frame, tile or slice back to the
  volume).

Boxes and masks in an :class:`Answer` are always in medvl's scan convention (see
``medvl.scans.views``): ``[x1, y1, x2, y2]`` normalised on a 2D scan, ``[x1, y1, z1, x2, y2, z2]``
normalised on a volume's RAS array axes, and masks shaped like the scan's spatial axes
(``(W, H)`` or ``(X, Y, Z)``), whatever the family.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medvl.model.grounding import parse_box, parse_box_3d, parse_boxes
from medvl.scans.views import FrameView, MIPView, MontageView, SliceView

__all__ = [
    "Answer",
    "AnswerContext",
    "ParsedResponse",
    "parse_answer",
    "parse_response",
    "strip_tokens",
    "text_box",
]

_TAG = re.compile(r"</?(?:think|answer)>")
_BLOCK = r"(?:(?!</?(?:think|answer)>).)*"  # text with no tag in it
_WITH_THINK = re.compile(rf"\s*<think>({_BLOCK})</think>\s*<answer>({_BLOCK})</answer>\s*", re.S)
_DIRECT = re.compile(rf"\s*(?:<think>\s*</think>)?\s*<answer>({_BLOCK})</answer>\s*", re.S)
# "frame 3", "Frame #3", '"frame": 3' — the marker that ties a 2D box to one video frame.
_FRAME_RE = re.compile(r"""\bframe["']?\s*(?:#|no\.?|number)?\s*[:=]?\s*(\d+)""", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedResponse:
    """What :func:`parse_response` read from a reply.

    Attributes:
        reasoning: The text of the think block, stripped; None without one.
        answer: The answer text, stripped: from ``<answer>`` tags, else the bare reply; None if
            there is none.
        well_formed: The reply is exactly the asked shape: an optional (reasoning=None) or
            required (True) non-empty think block, then one non-empty answer block, nothing else
            but whitespace, and no stray or nested tags.
    """

    reasoning: str | None
    answer: str | None
    well_formed: bool


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = _TAG.sub("", text).strip()
    return text or None


def parse_response(
    text: Any, reasoning: bool | None = None, think_prefilled: bool = False
) -> ParsedResponse:
    """Read the reasoning and the answer from a reply; never raises.

    Args:
        text: The decoded completion (anything but a string reads as nothing).
        reasoning: The shape asked for, for ``well_formed``: True (think then answer), False
            (answer alone; an empty think block, as Qwen3 writes in non-thinking mode, is
            allowed), None (either).
        think_prefilled: The prompt already ended with ``<think>`` (Qwen3-VL Thinking chat
            templates do), so the completion starts inside the think block.

    Returns:
        A :class:`ParsedResponse`. Lenient reading: an unclosed ``<think>`` runs to ``<answer>``
        or the end; the answer is the first ``<answer>`` block after the think block, an
        unclosed ``<answer>`` runs to the end (a cut-off reply), and with no answer tag at all
        the text after the think block is the answer. Stray tags are removed from both.
    """
    if not isinstance(text, str):
        return ParsedResponse(None, None, False)
    if think_prefilled and not text.lstrip().startswith("<think>"):
        text = "<think>" + text

    thought, rest = None, text
    close = text.find("</think>")
    if close >= 0:
        start = text.find("<think>")
        thought = text[start + 7 if 0 <= start < close else 0 : close]
        rest = text[close + 8 :]
    elif (start := text.find("<think>")) >= 0:
        end = text.find("<answer>", start)
        thought = text[start + 7 : end if end >= 0 else len(text)]
        rest = text[end:] if end >= 0 else ""

    block = re.search(r"<answer>(.*?)</answer>", rest, re.S)
    if block:
        answer = block.group(1)
    elif (start := rest.find("<answer>")) >= 0:
        answer = rest[start + 8 :]
    else:
        answer = rest

    full, direct = _WITH_THINK.fullmatch(text), _DIRECT.fullmatch(text)
    with_think = bool(full and full.group(1).strip() and full.group(2).strip())
    answer_only = bool(direct and direct.group(1).strip())
    if reasoning is None:
        well_formed = with_think or answer_only
    else:
        well_formed = with_think if reasoning else answer_only
    return ParsedResponse(_clean(thought), _clean(answer), well_formed)


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

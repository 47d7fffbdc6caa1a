"""Boxes as text: each Qwen-VL family's native grounding format, written and read back.

Inside medvl a box is normalised, ``[x1, y1, x2, y2]`` in [0, 1] with corners on pixel edges
(``medvl.scans.views``). A model reads and writes boxes as text, in the form its family was
trained on::

    family      text                                          numbers
    qwen2_vl    <|box_start|>(x1,y1),(x2,y2)<|box_end|>      integers 0-1000, relative
    qwen2_5_vl  {"bbox_2d": [x1, y1, x2, y2], "label": "a"}  integer pixels of the resized image
    qwen3_vl    {"bbox_2d": [x1, y1, x2, y2], "label": "a"}  integers 0-1000, relative
    3D (medvl)  {"bbox_3d": [x1, y1, z1, x2, y2, z2]}        volume coordinates 0-1, 3 decimals

Sources. Qwen2-VL: the model card and tokenizer (``<|box_start|>``, ``<|object_ref_start|>``,
coordinates normalised to [0, 1000)). Qwen2.5-VL: its ``cookbooks/spatial_understanding`` says
"absolute pixel values relative to the top-left corner of the resized image". Qwen3-VL: its
``cookbooks/2d_grounding.ipynb`` (github.com/QwenLM/Qwen3-VL) says "Qwen3-VL's default coordinate
system has been changed from the absolute coordinates used in Qwen2.5-VL to relative coordinates
ranging from 0 to 1000 (you don't need to calculate the resized_w)", and its plotting code
divides ``bbox_2d`` by 1000. So Qwen3-VL is relative 0-1000, not absolute pixels as an earlier
DESIGN.md line said. (Alibaba Cloud's API docs say 0-999, QwenLM/Qwen3-VL#1741; the difference is
below one step.)

The 3D form is medvl's own: no Qwen-VL family was trained on volume boxes. Beware that Qwen3-VL's
``3d_grounding`` cookbook uses the same key for something else, ``{"bbox_3d": [x_center, y_center,
z_center, x_size, y_size, z_size, roll, pitch, yaw]}`` in camera space; a 9-number ``bbox_3d`` is
therefore rejected here, not misread.

Writing rounds half up, and widens a box thinner than one step by one step, so that every valid
medvl box survives ``parse(format(box))`` within one quantisation step (1/1000 relative, one
resized pixel absolute, 0.001 in 3D).

Reading is lenient about syntax and strict about numbers, and never raises on the text:

* Found anywhere in the text, in order: ``bbox_2d`` lists (JSON or not: single quotes,
  trailing commas, code fences, prose, a cut-off label after a complete list are all fine),
  ``(x1,y1),(x2,y2)`` pairs (with or without the box tokens, which
  ``decode(skip_special_tokens=True)`` removes), and bare ``[a, b, c, d]`` lists that are not the
  value of another key (so a misspelled key such as ``"bbox2d"`` or a ``point_2d`` is not read as
  a box). The family sets what the numbers mean.
* Numbers are ASCII decimals; NaN, infinity and other words reject the box.
* Swapped corners are sorted (models often swap them); a box with no area after that is None.
* A corner slightly outside the image (up to ``OUTSIDE_TOLERANCE`` of the side) is clipped onto
  it; one further out rejects the box.
* ``parse_box`` returns the first valid box, ``parse_boxes`` all of them; nothing valid is None
  (or an empty list).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medvl.model.families import FAMILIES

RELATIVE_SCALE = 1000
"""Qwen2-VL and Qwen3-VL write coordinates as integers in 0..1000 of the image side."""

COORDINATES = {"qwen2_vl": "relative", "qwen2_5_vl": "absolute", "qwen3_vl": "relative"}
"""What a family's box numbers mean: ``relative`` (0-1000) or ``absolute`` (resized pixels)."""

OUTSIDE_TOLERANCE = 0.02
"""Corners up to this fraction of the side outside the image are clipped, further out rejected."""

BOX_3D_DECIMALS = 3

# Pixel budgets of the official checkpoints' preprocessor_config.json, for when only a family
# name is known: (patch_size * merge_size, min_pixels, max_pixels).
DEFAULT_RESIZE = {
    "qwen2_vl": (28, 56 * 56, 28 * 28 * 16384),
    "qwen2_5_vl": (28, 56 * 56, 28 * 28 * 16384),
    "qwen3_vl": (32, 256 * 256, 4096 * 4096),
}

_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
_KEYED_RE = {
    2: re.compile(r"""["']?bbox_2d["']?\s*:\s*\[([^\[\]]*)\]"""),
    3: re.compile(r"""["']?bbox_3d["']?\s*:\s*\[([^\[\]]*)\]"""),
}
_PAIR_RE = re.compile(
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)
_LIST_RE = re.compile(r"\[([^\[\]]*)\]")


def _check_family(family: str) -> str:
    if family not in COORDINATES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    return family


def _scales(family: str, image_size: Sequence[int] | None) -> tuple[float, float]:
    """Units per image side along x and y: 1000, or the resized width and height in pixels."""
    if COORDINATES[_check_family(family)] == "relative":
        return RELATIVE_SCALE, RELATIVE_SCALE
    if image_size is None or len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(
            f"{family} boxes are in pixels of the resized image: pass image_size=(width, height) "
            f"(see resized_image_size), got {image_size!r}"
        )
    return float(image_size[0]), float(image_size[1])


def _quantise(lo: float, hi: float, scale: float) -> tuple[int, int]:
    # Round half up (not Python's half-to-even) so that order is kept: lo <= hi -> a <= b.
    a, b = math.floor(lo * scale + 0.5), math.floor(hi * scale + 0.5)
    if b <= a:  # thinner than one step: the one step that holds its middle, inside the image
        a = min(math.floor((lo + hi) / 2 * scale), int(scale) - 1)
        b = a + 1
    return a, b


def _check_unit_box(box: Sequence[float], dims: int) -> list[float]:
    values = [float(v) for v in box]
    if len(values) != 2 * dims or not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise ValueError(f"expected a normalised box of {2 * dims} numbers in [0, 1], got {box!r}")
    if any(values[i] > values[i + dims] for i in range(dims)):
        raise ValueError(f"box {box!r} has a min corner above its max corner")
    return values


def to_native(
    box: Sequence[float], family: str, image_size: Sequence[int] | None = None
) -> list[int]:
    """A normalised 2D box -> the integers a family writes.

    Args:
        box: ``[x1, y1, x2, y2]`` in [0, 1], min corner first.
        family: One of ``FAMILIES``.
        image_size: ``(width, height)`` of the image as the model sees it (after the processor's
            resize); needed for ``qwen2_5_vl`` only.

    Returns:
        ``[x1, y1, x2, y2]`` in 0..1000 or in resized pixels, at least one step wide each way.

    Raises:
        ValueError: For a malformed box, an unknown family or a missing ``image_size``.
    """
    sx, sy = _scales(family, image_size)
    x1, y1, x2, y2 = _check_unit_box(box, 2)
    (a, c), (b, d) = _quantise(x1, x2, sx), _quantise(y1, y2, sy)
    return [a, b, c, d]


def _normalise(
    values: Sequence[float], scales: Sequence[float], tolerance: float = OUTSIDE_TOLERANCE
) -> list[float] | None:
    """Native numbers -> a sorted, clipped normalised box; None if invalid (never raises)."""
    dims = len(scales)
    if len(values) != 2 * dims or not all(math.isfinite(v) for v in values):
        return None
    lo, hi = [], []
    for axis, scale in enumerate(scales):
        a, b = sorted((values[axis] / scale, values[axis + dims] / scale))
        if a < -tolerance or b > 1 + tolerance:
            return None
        a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
        if b <= a:
            return None
        lo.append(a)
        hi.append(b)
    return lo + hi


def from_native(
    values: Sequence[float], family: str, image_size: Sequence[int] | None = None
) -> list[float] | None:
    """A family's box numbers -> a normalised ``[x1, y1, x2, y2]``, or None if invalid.

    Swapped corners are sorted; slightly outside is clipped; far outside, non-finite or no area
    is None (see the module docstring).

    Raises:
        ValueError: For an unknown family or a missing ``image_size`` (not for bad values).
    """
    scales = _scales(family, image_size)
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        return None
    return _normalise(numbers, scales)


def format_box(
    box: Sequence[float],
    family: str,
    image_size: Sequence[int] | None = None,
    label: str | None = None,
) -> str:
    """A normalised 2D box as the text the family writes.

    Args:
        box: ``[x1, y1, x2, y2]`` in [0, 1].
        family: One of ``FAMILIES``.
        image_size: Resized ``(width, height)`` the model sees; required for ``qwen2_5_vl``.
        label: What the box holds, e.g. ``"meniscal tear"``; optional.

    Returns:
        E.g. ``<|object_ref_start|>tear<|object_ref_end|><|box_start|>(120,340),(560,780)
        <|box_end|>`` (qwen2_vl) or ``{"bbox_2d": [120, 340, 560, 780], "label": "tear"}``.

    Raises:
        ValueError: See ``to_native``.
    """
    x1, y1, x2, y2 = to_native(box, family, image_size)
    if family == "qwen2_vl":
        ref = "" if label is None else f"<|object_ref_start|>{label}<|object_ref_end|>"
        return f"{ref}<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
    record: dict[str, Any] = {"bbox_2d": [x1, y1, x2, y2]}
    if label is not None:
        record["label"] = label
    return json.dumps(record, ensure_ascii=False)


def format_box_3d(box: Sequence[float], label: str | None = None) -> str:
    """A normalised 3D box as ``{"bbox_3d": [x1, y1, z1, x2, y2, z2]}`` with 3 decimals.

    The same for every family (medvl's convention; see the module docstring).

    Raises:
        ValueError: For a malformed box.
    """
    values = _check_unit_box(box, 3)
    steps = 10**BOX_3D_DECIMALS
    pairs = [_quantise(values[i], values[i + 3], steps) for i in range(3)]
    numbers = [p[0] for p in pairs] + [p[1] for p in pairs]
    text = ", ".join(f"{n / steps:.{BOX_3D_DECIMALS}f}" for n in numbers)
    tail = "" if label is None else f', "label": {json.dumps(label, ensure_ascii=False)}'
    return f'{{"bbox_3d": [{text}]{tail}}}'


def _numbers(content: str) -> list[float] | None:
    items = [item.strip() for item in content.split(",")]
    if items and items[-1] == "":  # a trailing comma
        items.pop()
    if not items or not all(_NUMBER_RE.fullmatch(item) for item in items):
        return None
    return [float(item) for item in items]


def _char_before(text: str, index: int) -> str:
    """The last non-space character before ``index`` ("" if none)."""
    while index > 0 and text[index - 1].isspace():
        index -= 1
    return text[index - 1] if index else ""


def _candidates(text: str, dims: int) -> list[list[float] | None]:
    """Every box-like group of numbers in ``text``, in order of appearance."""
    found: list[tuple[int, list[float] | None]] = []
    taken: list[tuple[int, int]] = []
    for match in _KEYED_RE[dims].finditer(text):
        found.append((match.start(), _numbers(match.group(1))))
        taken.append(match.span(1))
    if dims == 2:
        for match in _PAIR_RE.finditer(text):
            values = [float(match.group(i)) for i in (1, 2, 3, 4)]
            found.append((match.start(), values))
    for match in _LIST_RE.finditer(text):
        if any(a <= match.start(1) and match.end(1) <= b for a, b in taken):
            continue  # the list of a bbox key, already read
        if _char_before(text, match.start()) == ":":
            continue  # the value of some other key: a misspelling, point_2d, bbox_3d in 2D...
        values = _numbers(match.group(1))
        if values is not None and len(values) == 2 * dims:
            found.append((match.start(), values))
    return [values for _, values in sorted(found, key=lambda item: item[0])]


def parse_boxes(
    text: Any, family: str, image_size: Sequence[int] | None = None
) -> list[list[float]]:
    """Every valid 2D box in a model's text, normalised, in order of appearance.

    Args:
        text: The model's output (anything that is not a string gives ``[]``).
        family: One of ``FAMILIES``: decides what the numbers mean.
        image_size: Resized ``(width, height)``; required for ``qwen2_5_vl``.

    Returns:
        ``[[x1, y1, x2, y2], ...]`` in [0, 1]; invalid boxes are left out.

    Raises:
        ValueError: For an unknown family or a missing ``image_size``; never for the text.
    """
    scales = _scales(family, image_size)
    if not isinstance(text, str):
        return []
    boxes = []
    for values in _candidates(text, 2):
        box = None if values is None else _normalise(values, scales)
        if box is not None:
            boxes.append(box)
    return boxes


def parse_box(
    text: Any, family: str, image_size: Sequence[int] | None = None
) -> list[float] | None:
    """The first valid 2D box in a model's text, normalised ``[x1, y1, x2, y2]``, or None.

    See ``parse_boxes`` for the arguments and the module docstring for the rules.
    """
    boxes = parse_boxes(text, family, image_size)
    return boxes[0] if boxes else None


def parse_boxes_3d(text: Any) -> list[list[float]]:
    """Every valid ``bbox_3d`` (or bare 6-number list) in ``text``, normalised, in order."""
    if not isinstance(text, str):
        return []
    boxes = []
    for values in _candidates(text, 3):
        box = None if values is None else _normalise(values, (1.0, 1.0, 1.0))
        if box is not None:
            boxes.append(box)
    return boxes


def parse_box_3d(text: Any) -> list[float] | None:
    """The first valid 3D box in ``text``, ``[x1, y1, z1, x2, y2, z2]`` in [0, 1], or None."""
    boxes = parse_boxes_3d(text)
    return boxes[0] if boxes else None


def _resize_settings(processor_or_family: Any) -> tuple[int, int, int]:
    if isinstance(processor_or_family, str):
        return DEFAULT_RESIZE[_check_family(processor_or_family)]
    image_processor = getattr(processor_or_family, "image_processor", processor_or_family)
    size = getattr(image_processor, "size", None) or {}
    if not isinstance(size, Mapping):  # transformers' SizeDict
        size = {k: getattr(size, k, None) for k in ("shortest_edge", "longest_edge")}
    min_pixels = size.get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    max_pixels = size.get("longest_edge") or getattr(image_processor, "max_pixels", None)
    patch, merge = image_processor.patch_size, image_processor.merge_size
    if not min_pixels or not max_pixels:
        raise ValueError(f"cannot read the pixel limits of {type(image_processor).__name__}")
    return patch * merge, int(min_pixels), int(max_pixels)


def resized_image_size(processor_or_family: Any, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` of an image after the processor's resize (``smart_resize``).

    Args:
        processor_or_family: A Qwen-VL processor or image processor (its own ``size`` limits,
            ``patch_size`` and ``merge_size`` are used, so a real checkpoint's settings apply),
            or a family name (the official checkpoints' defaults).
        width: Original width in pixels.
        height: Original height in pixels.

    Returns:
        The resized ``(width, height)``: multiples of ``patch_size * merge_size``, the pixel
        count within the processor's limits. Images only; video frames have their own budget.

    Raises:
        ValueError: For an unknown family, or an aspect ratio over 200 (as the processor).
    """
    # transformers' own function, so the size is the one the image processor computes.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor, min_pixels, max_pixels = _resize_settings(processor_or_family)
    h, w = smart_resize(
        int(height), int(width), factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return w, h


def format_frame_boxes(
    view: Any,
    box: Sequence[float],
    family: str,
    image_size: Sequence[int] | None = None,
    label: str | None = None,
) -> dict[int, str]:
    """A 3D box as native 2D box text on each frame of a ``FrameView`` that shows it.

    The frame math is the view's (``FrameView.frame_boxes``); this only formats.

    Returns:
        ``{frame index: box text}``, for frames whose slice the box crosses.
    """
    return {
        frame: format_box(frame_box, family, image_size, label)
        for frame, frame_box in view.frame_boxes(box).items()
    }

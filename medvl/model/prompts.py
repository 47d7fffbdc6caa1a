"""Prompts for medical questions, SFT targets, and reading the model's reply.

A reply has one shape for every family and answer type::

    <think>
    one reasoning step per line
    </think>
    <answer>B</answer>

With ``reasoning=False`` the model is asked for the answer alone, still inside the tags
(``<answer>B</answer>``), so one parser and one format reward serve both modes; a bare reply
(``B``) is still read by :func:`parse_response`, but marked not well formed.

What goes inside ``<answer>`` depends on the answer type: an option letter (``choice``), ``yes`` or
``no`` (``closed``), a short phrase (``open``), an integer grade on a stated scale (``severity``)
or a box in the family's native text (``grounding``, see :mod:`medvl.model.grounding`): Qwen2-VL
``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` in 0-1000, Qwen2.5-VL ``{"bbox_2d": [...]}`` in
resized pixels, Qwen3-VL ``{"bbox_2d": [...]}`` in 0-1000, and ``{"bbox_3d": [...]}`` in 0-1 for
a volume box. The system prompts are the same for every family: Qwen3-VL has ``<think>`` and
``</think>`` as single tokens and its Thinking checkpoints open the block themselves (or their
template does; see ``think_prefilled``), but the format asked for is the same.

A volume shown through a view (``medvl.scans.views``) is described in the prompt from the view's
own coordinate map: how many slices, which plane, in which patient direction they run, and which
patient side each picture edge shows::

    prompt = build_prompt(sample, "qwen2_5_vl", view=frame_view)
    messages = prompt.messages(video=frame_view.frames)
    target = build_target(sample, "qwen2_5_vl")   # assistant text for SFT
    parsed = parse_response(completion)            # reasoning, answer, well_formed

The fixed wording (system prompts, answer instructions, severity scales) is in
:mod:`medvl.model.prompt_text`; its names are importable from here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medvl.data.sample import ANSWER_TYPES
from medvl.model.grounding import COORDINATES, format_box, format_box_3d
from medvl.model.prompt_text import (
    CHOICE_INSTRUCTION,
    CLOSED_INSTRUCTION,
    DIRECT_SYSTEM,
    GROUNDING_3D_INSTRUCTION,
    GROUNDING_INSTRUCTIONS,
    OPEN_INSTRUCTION,
    REASONING_SYSTEM,
    SEVERITY_INSTRUCTION,
    SEVERITY_SCALES,
    SeverityScale,
)
from medvl.scans.views import FrameView, MIPView, MontageView, SliceView

PLANES = ("sagittal", "coronal", "axial")  # slices across RAS array axis 0, 1, 2
_DIRECTIONS = {
    "R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior",
}  # fmt: skip
_TOWARDS, _AWAY = "RAS", "LPI"  # where RAS array axis k grows towards / comes from


@dataclass(frozen=True)
class Prompt:
    """A system prompt and the user's text, ready for a chat template.

    Attributes:
        system: The system message.
        user_text: The user message's text (the image or video goes before it).
    """

    system: str
    user_text: str

    def messages(self, image: Any = None, video: Any = None) -> list[dict[str, Any]]:
        """The conversation in qwen-vl-utils form (``medvl.model.generate.build_messages``)."""
        from medvl.model.generate import build_messages  # imports torch: only when asked

        return build_messages(self.user_text, image=image, video=video, system=self.system)


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


def _get(sample: Any, name: str, default: Any = None) -> Any:
    if isinstance(sample, Mapping):
        return sample.get(name, default)
    return getattr(sample, name, default)


def _fold_modality(modality: str) -> str:
    m = modality.strip().lower()
    if m in ("mr", "mri") or "magnetic" in m:
        return "mri"
    if m in ("cr", "dx", "x-ray", "xray") or "radiograph" in m:
        return "x-ray"
    return m


def severity_scale_for(
    sample: Any, scale: SeverityScale | tuple[int, int] | None = None
) -> SeverityScale | None:
    """The grading scale of a severity question: ``scale`` if given, else from the sample's
    anatomy and modality (``SEVERITY_SCALES``), else None (no range stated)."""
    if scale is not None:
        return scale if isinstance(scale, SeverityScale) else SeverityScale(*scale)
    anatomy = (_get(sample, "anatomy") or "").strip().lower()
    modality = _fold_modality(_get(sample, "modality") or "")
    if anatomy == "" and modality == "fundus":
        anatomy = "fundus"
    return SEVERITY_SCALES.get((anatomy, modality)) or SEVERITY_SCALES.get((anatomy, ""))


def _scan_name(sample: Any) -> str:
    words = [w for w in (_get(sample, "anatomy"), _get(sample, "modality")) if w]
    if len(words) == 2 and words[0].lower() == words[1].lower():
        words = words[:1]
    if not words:
        return "the scan"
    name = " ".join(words)
    vowel = name[0].upper() in "AEIOU" or name.upper().startswith(("MR", "X-", "X "))
    return ("an " if vowel else "a ") + name


def _edges(plane: Any, what: str) -> str:
    edges = plane.edges
    left, top = _DIRECTIONS[edges["left"]], _DIRECTIONS[edges["top"]]
    return f"{what} shows the patient's {left} side on the left and {top} at the top."


def _run(axis: int, first: int, last: int) -> str:
    ends = (_AWAY[axis], _TOWARDS[axis]) if first <= last else (_TOWARDS[axis], _AWAY[axis])
    a, b = (_DIRECTIONS[e] for e in ends)
    return f"from the patient's {a} to {b}" if axis == 0 else f"from {a} to {b}"


def describe_view(view: Any, sample: Any = None) -> str:
    """Sentences telling the model how a volume is shown: frames, montage, slice or MIP.

    Args:
        view: A ``FrameView``, ``MontageView``, ``SliceView`` or ``MIPView``.
        sample: Its sample (for the anatomy and modality words); optional.

    Returns:
        E.g. "The video shows 16 sagittal slices of a knee MRI, one per frame, in order from the
        patient's left to right. Each frame shows the patient's anterior side on the left and
        superior at the top."

    Raises:
        TypeError: For anything else.
    """
    if not isinstance(view, (FrameView, MontageView, SliceView, MIPView)):
        raise TypeError(f"expected a medvl.scans.views view, got {type(view).__name__}")
    scan = _scan_name(sample or {})
    plane = view.plane
    name = PLANES[plane.axis]
    if isinstance(view, (FrameView, MontageView)):
        idx = view.slice_indices
        n, run = len(idx), _run(plane.axis, idx[0], idx[-1])
        if isinstance(view, FrameView):
            text = f"The video shows {n} {name} slices of {scan}, one per frame, in order {run}."
            return f"{text} {_edges(plane, 'Each frame')}"
        text = (
            f"The image is a grid of {n} {name} slices of {scan}, read left to right and top to "
            f"bottom, in order {run}."
        )
        if view.label_height > 0:
            text += f" Each tile is labelled {'xyz'[plane.axis]}=<slice number> above it."
        return f"{text} {_edges(plane, 'Each tile')}"
    if isinstance(view, SliceView):
        text = f"The image is {name} slice {view.slice_index} of {plane.n_slices} of {scan}."
        return f"{text} {_edges(plane, 'It')}"
    a, b = view.slab  # a MIPView
    text = f"The image is a maximum intensity projection of {name} slices {a} to {b} of {scan}."
    return f"{text} {_edges(plane, 'It')}"


def _check(sample: Any, family: str) -> str:
    if family not in COORDINATES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(COORDINATES)}")
    kind = _get(sample, "answer_type")
    if kind not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {', '.join(ANSWER_TYPES)}, got {kind!r}")
    return kind


def _is_3d(sample: Any, view: Any) -> bool:
    box = _get(sample, "box")
    if box is not None:
        return len(box) == 6
    return isinstance(view, (FrameView, MontageView, MIPView))


def answer_instruction(
    sample: Any,
    family: str,
    view: Any = None,
    scale: SeverityScale | tuple[int, int] | None = None,
) -> str:
    """The sentence that says what to put inside ``<answer>`` for this sample and family."""
    kind = _check(sample, family)
    if kind == "choice":
        return CHOICE_INSTRUCTION
    if kind == "closed":
        return CLOSED_INSTRUCTION
    if kind == "open":
        return OPEN_INSTRUCTION
    if kind == "severity":
        found = severity_scale_for(sample, scale)
        return SEVERITY_INSTRUCTION + (f" {found.describe()}." if found else ".")
    return GROUNDING_3D_INSTRUCTION if _is_3d(sample, view) else GROUNDING_INSTRUCTIONS[family]


def build_prompt(
    sample: Any,
    family: str,
    view: Any = None,
    reasoning: bool = True,
    severity_scale: SeverityScale | tuple[int, int] | None = None,
) -> Prompt:
    """The system prompt and user text for one question.

    Args:
        sample: A ``Sample``, or a mapping with at least ``question`` and ``answer_type`` (and
            ``options`` for choice; ``anatomy``, ``modality``, ``box`` are used when present).
        family: One of ``FAMILIES``; decides the grounding format.
        view: How a volume is shown (``FrameView``, ``MontageView``, ``SliceView``, ``MIPView``);
            described in the user text. None for a 2D image.
        reasoning: Ask for ``<think>`` then ``<answer>`` (True) or the answer alone (False).
        severity_scale: The grade range for severity questions, overriding ``SEVERITY_SCALES``.

    Returns:
        A :class:`Prompt`. User text: view description, question, options as ``A. text`` lines,
        then the answer instruction, one per line.

    Raises:
        ValueError: For an unknown family or answer type, or a choice question without options.
    """
    kind = _check(sample, family)
    lines = [] if view is None else [describe_view(view, sample)]
    lines.append(str(_get(sample, "question", "")).strip())
    if kind == "choice":
        options = _get(sample, "options")
        if not options:
            raise ValueError("a choice question needs options (letter -> text)")
        lines += [f"{letter}. {text}" for letter, text in options.items()]
    lines.append(answer_instruction(sample, family, view, severity_scale))
    return Prompt(REASONING_SYSTEM if reasoning else DIRECT_SYSTEM, "\n".join(lines))


def answer_text(
    sample: Any, family: str, image_size: Sequence[int] | None = None, label: str | None = None
) -> str:
    """The reference answer as the model should write it inside ``<answer>``.

    Grounding boxes are formatted natively (``image_size``: the resized image, for Qwen2.5-VL;
    ``label``: defaults to the sample's ``target`` meta key, as phantom samples carry it).
    """
    kind = _check(sample, family)
    if kind == "grounding":
        box = _get(sample, "box")
        if box is None:
            raise ValueError("a grounding sample needs a box")
        if label is None:
            meta = _get(sample, "meta") or {}
            label = meta.get("target") if isinstance(meta, Mapping) else None
            label = label if label is not None else _get(sample, "target")
        if len(box) == 6:
            return format_box_3d(box, label=label)
        return format_box(box, family, image_size, label=label)
    if kind == "severity" and _get(sample, "severity") is not None:
        return str(_get(sample, "severity"))
    answer = str(_get(sample, "answer", "")).strip()
    return answer.upper() if kind == "choice" else answer.lower() if kind == "closed" else answer


def build_target(
    sample: Any,
    family: str,
    image_size: Sequence[int] | None = None,
    reasoning_steps: Sequence[str] | None = None,
    reasoning: bool = True,
    label: str | None = None,
) -> str:
    """The assistant's text for SFT: ``<think>\\nsteps\\n</think>\\n<answer>...</answer>``.

    Args:
        sample: As for :func:`build_prompt`, with its answer (and ``box`` for grounding).
        family: One of ``FAMILIES``.
        image_size: Resized ``(width, height)`` the model sees; needed for Qwen2.5-VL 2D boxes.
        reasoning_steps: Steps for the think block, one per line; default the sample's
            ``reasoning``.
        reasoning: False gives ``<answer>...</answer>`` alone. So does a sample without steps,
            rather than an empty think block that would teach the model to skip thinking.
        label: Label of a grounding box (see :func:`answer_text`).

    Returns:
        The target text, which :func:`parse_response` reads back as well formed.
    """
    answer = f"<answer>{answer_text(sample, family, image_size, label)}</answer>"
    steps = reasoning_steps if reasoning_steps is not None else _get(sample, "reasoning")
    steps = [s.strip() for s in steps or [] if s and s.strip()]
    if not reasoning or not steps:
        return answer
    return "<think>\n" + "\n".join(steps) + "\n</think>\n" + answer


_TAG = re.compile(r"</?(?:think|answer)>")
_BLOCK = r"(?:(?!</?(?:think|answer)>).)*"  # text with no tag in it
_WITH_THINK = re.compile(rf"\s*<think>({_BLOCK})</think>\s*<answer>({_BLOCK})</answer>\s*", re.S)
_DIRECT = re.compile(rf"\s*(?:<think>\s*</think>)?\s*<answer>({_BLOCK})</answer>\s*", re.S)


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

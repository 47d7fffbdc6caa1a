"""Prompts for medical questions, SFT targets, and reading the model's reply.

A reply has one shape for every family and answer type::

    <think>
    one reasoning step per line
    </think>
    <answer>B</answer>

With ``reasoning=False`` the model is asked for the answer alone, still inside the tags
(``<answer>B</answer>``), so one parser and one format reward serve both modes; a bare reply
(``B``) is still read by :func:`medvl.model.replies.parse_response`, but marked not well formed.

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
    parsed = replies.parse_response(completion)    # reasoning, answer, well_formed

The fixed wording (system prompts, answer instructions, severity scales) is in
:mod:`medvl.model.prompt_text`; its names are importable from here too.
"""

from __future__ import annotations

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
from medvl.scans.views import FrameView, MIPView, MontageView, SliceView, ViewSettings

PLANES = ("sagittal", "coronal", "axial")  # slices across RAS array axis 0, 1, 2
_DIRECTIONS = {
    "R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior",
}  # fmt: skip
_TOWARDS, _AWAY = "RAS", "LPI"  # where RAS array axis k grows towards / comes from


@dataclass
class PromptSettings(ViewSettings):
    """How questions are put to the model (saved in the MedVLM config).

    Attributes:
        view, n_frames, axis, size: How a volume given as a scan is shown
            (`medvl.scans.views.ViewSettings`).
        reasoning: Ask for ``<think>`` then ``<answer>`` (True) or the answer alone.
        video_fps: Frame rate given to videos (see ``prepare_inputs``).
    """

    reasoning: bool = True
    video_fps: float = 2.0


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
        """The conversation in qwen-vl-utils form (``medvl.model.inputs.build_messages``)."""
        from medvl.model.inputs import build_messages  # imports torch: only when asked

        return build_messages(self.user_text, image=image, video=video, system=self.system)


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
        The target text, which :func:`medvl.model.replies.parse_response` reads back as well formed.
    """
    answer = f"<answer>{answer_text(sample, family, image_size, label)}</answer>"
    steps = reasoning_steps if reasoning_steps is not None else _get(sample, "reasoning")
    steps = [s.strip() for s in steps or [] if s and s.strip()]
    if not reasoning or not steps:
        return answer
    return "<think>\n" + "\n".join(steps) + "\n</think>\n" + answer



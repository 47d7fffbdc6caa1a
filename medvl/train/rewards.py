"""Verifiable rewards for GRPO, with TRL's reward-function signature.

Every reward is ``reward(completions, **columns) -> list[float | None]``: ``completions`` holds
one completion per row, and each column is a ``Sample`` field given as a list with one value per
row (``answer=[...]``, ``answer_type=[...]``, ``box=[...]``, ...). That is how TRL's
``GRPOTrainer`` calls its ``reward_funcs`` (it also passes ``prompts``, ``completion_ids``,
``trainer_state`` and every other dataset column; the rewards take them as ``**kwargs`` and
ignore what they do not use), so each function here plugs into TRL as it is::

    from medvl.train.rewards import accuracy_reward, box_iou_reward, format_reward
    GRPOTrainer(..., reward_funcs=[format_reward, accuracy_reward, box_iou_reward("qwen2_vl")])

A completion is a string or a TRL conversational completion, a list of messages
``[{"role": "assistant", "content": "..."}]`` (the content a string or a list of
``{"type": "text", "text": ...}`` parts); the text of its assistant messages is scored.

A reward gives ``None`` for a row it does not apply to (IoU for a choice question, accuracy for
a grounding question); TRL ignores those rows for that reward. An unreadable answer to a row it
does apply to scores 0.0, and so does an answer that was cut off: an ``<answer>`` block never
closed, or a row whose optional ``truncated`` column is True (medvl's trainer passes it for
completions that hit ``max_new_tokens``; TRL does not, and the unclosed tag still counts).
A choice reply that hedges (``"A or B"``, ``"not A"``: :func:`medvl.eval.extract.is_hedge`)
chooses nothing and scores 0.0 whatever the truth. Scoring is :mod:`medvl.eval.metrics`' and
:mod:`medvl.eval.extract`'s, so training and evaluation agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medvl.eval.extract import extract_grade
from medvl.eval.metrics import answer_correct, box_iou, severity_abs_error
from medvl.model.grounding import COORDINATES, parse_box, parse_box_3d
from medvl.model.prompts import severity_scale_for
from medvl.model.replies import parse_response

RewardFunc = Callable[..., list[float | None]]

__all__ = [
    "DEFAULT_REWARDS",
    "RewardFunc",
    "accuracy_reward",
    "box_head_iou_reward",
    "box_iou_reward",
    "completion_text",
    "default_rewards",
    "format_reward",
    "severity_reward",
]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or a TRL conversational completion.

    Args:
        completion: A string; a list of messages (``{"role": ..., "content": ...}``) whose
            assistant messages are joined (all messages when none is marked assistant); or one
            message. Content may be a string or a list of ``{"type": "text", "text": ...}``
            parts.

    Returns:
        The text; ``""`` for anything else. Never raises.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence):
        return ""
    messages = [m for m in completion if isinstance(m, Mapping)]
    assistant = [m for m in messages if m.get("role") == "assistant"]
    return "".join(_content_text(m.get("content")) for m in assistant or messages)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _column(values: Any, n: int, name: str) -> list[Any]:
    """A column as one value per row: None -> all None; a list must have one value per row."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"column {name!r} must be a list with one value per completion")
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 for a reply in the asked shape ``<think>…</think><answer>…</answer>``, else 0.0.

    Well formed means :func:`medvl.model.replies.parse_response` with ``reasoning=True``: a
    non-empty think block, then one non-empty answer block, nothing else but whitespace, no
    stray or nested tags.

    Args:
        completions: One completion per row (strings or conversational).
        **kwargs: Other columns; ignored.

    Returns:
        1.0 or 0.0 per row; never None.
    """
    return [
        1.0 if parse_response(completion_text(c), reasoning=True).well_formed else 0.0
        for c in completions
    ]


def accuracy_reward(
    completions: Sequence[Any],
    answer: Sequence[Any],
    answer_type: Sequence[str],
    options: Sequence[Mapping[str, str] | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the ``<answer>`` part is the reference answer, else 0.0.

    Correctness is :func:`medvl.eval.metrics.answer_correct` on the answer that
    ``parse_response`` reads (the bare reply when there are no tags): option letter for
    ``choice`` (a hedge reads as no letter), yes/no for ``closed``, normalised exact match
    for ``open``. Severity rows are :func:`severity_reward`'s (partial credit): scored here
    too, a right grade would be paid twice.

    Args:
        completions: One completion per row.
        answer: The reference answers (``Sample.answer``).
        answer_type: The rows' answer types.
        options: The rows' choice options (letter -> text, or None).
        **kwargs: Other columns; ``truncated`` and ``question`` (for yes/no read from a
            statement, see :func:`medvl.eval.extract.extract_yes_no`) are read.

    Returns:
        1.0 or 0.0 per row; None for grounding rows (use :func:`box_iou_reward`), severity
        rows (use :func:`severity_reward`) and rows without an answer or answer type.
    """
    n = len(completions)
    answers = _column(answer, n, "answer")
    kinds = _column(answer_type, n, "answer_type")
    opts = _column(options, n, "options")
    questions = _column(kwargs.get("question"), n, "question")
    said = _answers(completions, kwargs.get("truncated"))
    rewards: list[float | None] = []
    for text, ref, kind, opt, q in zip(said, answers, kinds, opts, questions, strict=True):
        if ref is None or kind is None or kind in ("grounding", "severity"):
            rewards.append(None)
            continue
        right = text is not None and answer_correct(text, ref, kind, opt, q)
        rewards.append(1.0 if right else 0.0)
    return rewards


_UNCLOSED = re.compile(r"<answer>(?!.*</answer>)", re.S)


def _answers(completions: Sequence[Any], truncated: Any) -> list[str | None]:
    """The answer of each row for scoring: None when the reply was cut off (an unclosed
    ``<answer>``, or ``truncated`` True for the row), else `parse_response`'s answer."""
    cut = _column(truncated, len(completions), "truncated")
    said: list[str | None] = []
    for completion, was_cut in zip(completions, cut, strict=True):
        text = completion_text(completion)
        said.append(None if was_cut or _UNCLOSED.search(text) else parse_response(text).answer)
    return said


def _per_row_sizes(image_size: Any, n: int) -> list[Any]:
    """``image_size`` per row; one ``(width, height)`` pair of numbers is shared by all rows."""
    if (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in image_size)
    ):
        return [image_size] * n
    return _column(image_size, n, "image_size")


def box_iou_reward(family: str) -> RewardFunc:
    """A reward: IoU of the box a reply gives with the row's reference box.

    The box is read from the ``<answer>`` part (the bare reply without tags) in the family's
    native text (:func:`medvl.model.grounding.parse_box`) for a 2D reference box, or as
    ``bbox_3d`` (:func:`medvl.model.grounding.parse_box_3d`) when the reference has 6 numbers.
    IoU is :func:`medvl.eval.metrics.box_iou`.

    Args:
        family: The model family, ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``: decides what
            the numbers of a 2D box mean.

    Returns:
        ``reward(completions, box, image_size=None, **kwargs) -> list[float | None]``, named
        ``box_iou_reward_<family>`` (TRL logs rewards by ``__name__``). ``box`` is the rows'
        normalised reference boxes; ``image_size`` the resized ``(width, height)`` each row's
        image had for the model (one pair for all rows is accepted too), needed for
        ``qwen2_5_vl`` 2D boxes. Per row: the IoU; 0.0 when no valid box can be read; None
        when the row has no box.

    Raises:
        ValueError: For an unknown family; the reward raises for a ``qwen2_5_vl`` 2D row
            without ``image_size`` (a set-up error, not a bad reply).
    """
    if family not in COORDINATES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(COORDINATES)}")

    def reward(
        completions: Sequence[Any],
        box: Sequence[Sequence[float] | None],
        image_size: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        boxes, sizes = _column(box, n, "box"), _per_row_sizes(image_size, n)
        answers = _answers(completions, kwargs.get("truncated"))
        rewards: list[float | None] = []
        for said, true, size in zip(answers, boxes, sizes, strict=True):
            if true is None:
                rewards.append(None)
                continue
            pred = parse_box_3d(said) if len(true) == 6 else parse_box(said, family, size)
            rewards.append(0.0 if pred is None or len(pred) != len(true) else box_iou(pred, true))
        return rewards

    reward.__name__ = reward.__qualname__ = f"box_iou_reward_{family}"
    return reward


def box_head_iou_reward(
    completions: Sequence[Any],
    box: Sequence[Sequence[float] | None],
    head_box: Sequence[Sequence[float] | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """IoU of the box head's prediction with the row's reference box, instead of a box
    written in the text.

    ``head_box`` is the box head's output in medvl's scan coordinates, one per row (None
    where the completion has no ``<|box|>`` token): `medvl.train.grpo.GRPOTrainer` computes
    it, from the hidden state at the completion's box token (appended for grounding
    questions), when this reward is among its rewards. As at inference, the head reads a box
    whether or not the reply was complete, so ``truncated`` does not zero this reward.

    Returns:
        Per row: the IoU; 0.0 without a head box; None for rows without a reference box.

    Raises:
        ValueError: Without a ``head_box`` column (TRL does not compute one).
    """
    n = len(completions)
    if head_box is None:
        raise ValueError("box_head_iou_reward needs the head_box column (medvl's GRPOTrainer "
                         "computes it from the model's box head)")  # fmt: skip
    boxes, heads = _column(box, n, "box"), _column(head_box, n, "head_box")
    rewards: list[float | None] = []
    for true, pred in zip(boxes, heads, strict=True):
        if true is None:
            rewards.append(None)
        elif pred is None or len(pred) != len(true):
            rewards.append(0.0)
        else:
            rewards.append(box_iou(list(pred), list(true)))
    return rewards


def _scale_top(max_grade: Any, anatomy: Any, modality: Any) -> int | None:
    if max_grade is not None:
        return int(max_grade)
    scale = severity_scale_for({"anatomy": anatomy or "", "modality": modality or ""})
    return None if scale is None else scale.high


def severity_reward(
    completions: Sequence[Any],
    severity: Sequence[int | None],
    max_grade: int | Sequence[int | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Partial credit for a severity grade: ``1 - |pred - true| / max_grade``, clipped to [0, 1].

    The grade is read from the ``<answer>`` part with :func:`medvl.eval.extract.extract_grade`
    (a grade above the scale is unreadable) and compared with
    :func:`medvl.eval.metrics.severity_abs_error`.

    ``max_grade``, the top of the scale, is the given value when not None (one number for all
    rows, or one per row), else the top of the sample's scale from its ``anatomy`` and
    ``modality`` columns (``medvl.model.prompt_text.SEVERITY_SCALES``: knee MRI MOAKS 0-3, knee
    X-ray Kellgren-Lawrence 0-4, fundus ICDR 0-4). With neither, the reward is exact match
    (1.0 or 0.0).

    Args:
        completions: One completion per row.
        severity: The rows' reference grades (``Sample.severity``).
        max_grade: The top grade, see above.
        **kwargs: Other columns; ``anatomy`` and ``modality`` are read.

    Returns:
        A float in [0, 1] per row; 0.0 for an unreadable grade; None for rows without severity.
    """
    n = len(completions)
    grades = _column(severity, n, "severity")
    if max_grade is None or isinstance(max_grade, (int, float)):
        tops = [max_grade] * n
    else:
        tops = _column(max_grade, n, "max_grade")
    anatomy = _column(kwargs.get("anatomy"), n, "anatomy")
    modality = _column(kwargs.get("modality"), n, "modality")
    answers = _answers(completions, kwargs.get("truncated"))
    rewards: list[float | None] = []
    for said, true, top, ana, mod in zip(answers, grades, tops, anatomy, modality, strict=True):
        if true is None:
            rewards.append(None)
            continue
        top = _scale_top(top, ana, mod)
        error = severity_abs_error(extract_grade(said, max_grade=top), true)
        if error is None:
            rewards.append(0.0)
        elif top is None or top <= 0:
            rewards.append(1.0 if error == 0 else 0.0)
        else:
            rewards.append(max(0.0, 1.0 - error / top))
    return rewards


DEFAULT_REWARDS: list[RewardFunc] = [format_reward, accuracy_reward, severity_reward]
"""Rewards that need no settings: format, accuracy, severity. Add :func:`box_iou_reward` for
the model's family (or use :func:`default_rewards`) when the data has grounding rows."""


def default_rewards(family: str) -> list[RewardFunc]:
    """``DEFAULT_REWARDS`` plus ``box_iou_reward(family)``: every answer type scored."""
    return [*DEFAULT_REWARDS, box_iou_reward(family)]

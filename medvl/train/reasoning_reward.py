"""Length calibration of the reasoning, by how hard the group found the question, in the spirit
of AdaThink-Med (adaptive thinking for medical VQA) with Kimi k1.5's length reward.

A fixed length band pays a model for padding its ``<think>`` block and for long reasoning on
questions it already answers easily. :func:`reasoning_length_reward` reads each group of
completions of one prompt (rows with the same ``prompts``, else the same ``id`` and
``question``) and how many of them answer correctly:

* length ``L_i`` is the number of *distinct* words of completion i's think block (lowercased,
  punctuation stripped), so repeating filler adds nothing; no think block gives 0;
* correctness ``c_i`` is :func:`medvl.train.rewards.accuracy_reward`'s 1.0 (choice, closed,
  open rows) or a full :func:`medvl.train.rewards.severity_reward` (severity rows);
* the group is *easy* when its share of correct answers ``p >= easy_share`` (default 0.5).
  Then shorter is better, Kimi k1.5's rule over the group's lengths::

      lam_i = 0.5 - (L_i - L_min) / (L_max - L_min)        (0 when all lengths are equal)
      r_i   = lam_i if c_i else min(0, lam_i)             (in [-0.5, 0.5])

  A right answer is paid for being among the shortest and a long one costs, a wrong answer
  is never paid for being short;
* the group is *hard* when ``p < easy_share``: longer reasoning is allowed, up to a floor of
  useful length, and nothing is taken for length: ``r_i = 0.5 * min(1, L_i / min_words)``.

Rows it cannot judge (grounding questions, rows without an answer) get None.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from medvl.model.replies import parse_response
from medvl.train.rewards import RewardFunc, _column, accuracy_reward, completion_text
from medvl.train.rewards import severity_reward as _severity

__all__ = ["distinct_words", "reasoning_length_reward"]

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def distinct_words(text: str | None) -> int:
    """Distinct lowercase words of ``text`` (0 for None): the length filler cannot pad."""
    return len(set(_WORD.findall(text.lower()))) if text else 0


def _correct(completions: Sequence[Any], kwargs: dict[str, Any]) -> list[float | None]:
    n = len(completions)
    accuracy = accuracy_reward(
        completions, answer=kwargs.get("answer", [None] * n),
        answer_type=kwargs.get("answer_type", [None] * n), options=kwargs.get("options"),
        truncated=kwargs.get("truncated"),
    )  # fmt: skip
    severity = [None] * n
    if kwargs.get("severity") is not None:
        rest = {k: v for k, v in kwargs.items() if k not in ("severity", "completions")}
        severity = _severity(completions, severity=kwargs["severity"], **rest)
    return [
        a if a is not None else (None if s is None else float(s == 1.0))
        for a, s in zip(accuracy, severity, strict=True)
    ]


def _groups(n: int, kwargs: dict[str, Any]) -> list[str]:
    if kwargs.get("prompts") is not None:
        return [repr(p) for p in _column(kwargs["prompts"], n, "prompts")]
    ids = _column(kwargs.get("id"), n, "id")
    questions = _column(kwargs.get("question"), n, "question")
    return [repr((i, q)) for i, q in zip(ids, questions, strict=True)]


def reasoning_length_reward(min_words: int = 20, easy_share: float = 0.5) -> RewardFunc:
    """A reward that calibrates the reasoning's length to the question's difficulty for the
    model (formula in the module docstring).

    Args:
        min_words: Distinct words a hard question's reasoning is paid up to (> 0).
        easy_share: Share of right answers from which a group counts as easy (0 to 1].

    Returns:
        ``reward(completions, **columns) -> list[float | None]`` named
        ``reasoning_length_reward_<min_words>``, with TRL's signature: reads ``answer``,
        ``answer_type``, ``options``, ``severity`` (and ``anatomy`` / ``modality`` for the
        scale), ``prompts`` or ``id`` / ``question`` for the groups, ``truncated`` if given.

    Raises:
        ValueError: For ``min_words < 1`` or ``easy_share`` outside (0, 1].
    """
    if min_words < 1 or not 0 < easy_share <= 1:
        raise ValueError(f"need min_words >= 1 and 0 < easy_share <= 1, got {min_words}, "
                         f"{easy_share}")  # fmt: skip

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        correct = _correct(completions, kwargs)
        lengths = [distinct_words(parse_response(completion_text(c)).reasoning)
                   for c in completions]  # fmt: skip
        rows: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(_groups(n, kwargs)):
            if correct[i] is not None:
                rows[key].append(i)
        rewards: list[float | None] = [None] * n
        for members in rows.values():
            share = sum(correct[i] for i in members) / len(members)
            if share < easy_share:  # hard for the model: longer reasoning allowed
                for i in members:
                    rewards[i] = 0.5 * min(1.0, lengths[i] / min_words)
                continue
            low, high = min(lengths[i] for i in members), max(lengths[i] for i in members)
            for i in members:
                lam = 0.0 if high == low else 0.5 - (lengths[i] - low) / (high - low)
                if lengths[i] == 0:
                    rewards[i] = min(0.0, lam)  # no reasoning at all earns nothing
                else:
                    rewards[i] = lam if correct[i] else min(0.0, lam)
        return rewards

    reward.__name__ = reward.__qualname__ = f"reasoning_length_reward_{min_words}"
    return reward

"""Cleaning an answer's text before it is read: ``\\boxed{}``, answer cues, and the open-answer
normalisation.

* `unbox` unwraps LaTeX ``\\boxed{...}`` (MedEvalKit-style prompts ask for it), keeping what is
  inside;
* `strip_answer_cue` removes a leading "Answer:" / "The final answer is" from an open answer;
* `normalize_text` is SQuAD v1.1's answer normalisation (lowercase, punctuation and the
  articles a/an/the dropped, whitespace collapsed) with four changes for medical answers:
  a hyphen or slash separates words ("T2-weighted" = "t2 weighted"), a number keeps its
  decimal point and loses trailing zeros ("2.0" = "2", "2.5" is not "25"), a unit is split from
  its number ("2cm" = "2 cm"), and number words up to twenty become digits ("two" = "2").
"""

from __future__ import annotations

import re
import string
from typing import Any

__all__ = ["normalize_text", "strip_answer_cue", "unbox"]

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_CUE = re.compile(
    r"^\s*(?:[*_`]*\s*)?(?:(?:so|thus|therefore|hence),?\s+)?(?:the\s+)?(?:final\s+)?"
    r"answer\s*(?:is\s*:?|:|=|-)\s*",
    re.I,
)
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_UNIT = re.compile(r"(\d)([a-z])")
_SEPARATOR = re.compile(r"[-/‐-―]")
_POINT = "\x00"  # stands for a decimal point while punctuation is dropped


def unbox(text: Any) -> Any:
    """``text`` with every ``\\boxed{X}`` replaced by ``X`` (anything but a string unchanged)."""
    if not isinstance(text, str) or "boxed" not in text:
        return text
    return _BOXED.sub(lambda m: m.group(1), text)


def strip_answer_cue(text: Any) -> Any:
    """``text`` without a leading answer cue ("Answer:", "The answer is", "Final answer:")."""
    if not isinstance(text, str):
        return text
    return _CUE.sub("", text, count=1)


def _decimal(match: re.Match) -> str:
    whole, frac = match.group(1), match.group(2).rstrip("0")
    return f"{whole}{_POINT}{frac}" if frac else whole


def normalize_text(text: Any) -> str:
    """Open-answer normalisation (SQuAD v1.1 with the four changes of the module docstring).

    Args:
        text: The answer text; anything that is not a string normalises to ``""``.

    Returns:
        The normalised text, e.g. ``"The Medial Meniscus."`` -> ``"medial meniscus"``,
        ``"T2-weighted, 2.0cm"`` -> ``"t2 weighted 2 cm"``.
    """
    if not isinstance(text, str):
        return ""
    text = unbox(text).lower()
    text = _DECIMAL.sub(_decimal, text)
    text = _SEPARATOR.sub(" ", text)
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _NUMBER_WORD.sub(lambda m: str(_WORDS.index(m.group(1))), text)
    text = _UNIT.sub(r"\1 \2", text).replace(_POINT, ".")
    return " ".join(_ARTICLES.sub(" ", text).split())

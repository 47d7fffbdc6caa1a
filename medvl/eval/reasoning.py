"""Reasoning quality: a model's ``<think>`` steps against the Sample's reference steps.

Following M3CoTBench and MedR-Bench, a reasoning is split into steps (`split_steps`), each
generated step is matched to at most one reference step (a one-to-one assignment that
maximises the total similarity, pairs below the matcher's threshold dropped), and
`score_reasoning` reports:

* **recall** (completeness) = matched / reference steps: how much of the reference reasoning
  the model gave;
* **precision** (factuality against the reference) = matched / generated steps: how much of
  what the model said the reference supports; None when the model gave no step;
* **f1** = 2 P R / (P + R) (0 when nothing matched);
* **order** = the share of concordant pairs among the matched pairs: for every two matches,
  whether the generated steps come in the reference's order (1.0: the reference order, 0.0:
  reversed; None with fewer than two matches);
* **consistent** (answer-reasoning agreement): the reasoning's conclusion — its last step that
  reads as an answer of the question's type, with :mod:`medvl.eval.extract`'s readers — is the
  ``<answer>``'s answer. False when no step reads as an answer; None when the ``<answer>``
  itself cannot be read or the type has no readable answer (grounding);
* **efficiency**: matched steps per 100 generated tokens and per second of generation.

Similarity comes from a *matcher* (`medvl.eval.reasoning_matcher.StepMatcher`), anything with
``threshold`` and ``similarity(generated, reference) -> (G, R) array``: the offline
`medvl.eval.reasoning_matcher.EmbeddingMatcher` or :class:`medvl.eval.judge.JudgeMatcher` (an
LLM judge); its threshold is calibrated in `medvl.eval.reasoning_matcher`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medvl.eval.extract import extract_choice, extract_grade, extract_yes_no
from medvl.eval.metrics import token_f1

if TYPE_CHECKING:
    from medvl.eval.reasoning_matcher import StepMatcher

__all__ = [
    "ReasoningScore", "contradicts", "match_steps", "score_reasoning", "split_steps",
    "step_content",
]  # fmt: skip


# "1.", "2)", "Step 3:", "-", "*", "•" at the start of a line.
_MARKER = re.compile(r"^\s*(?:step\s*\d+\s*[:.)-]?|\d+\s*[.)]|[-*•])\s*", re.I)
# A short label before a colon: "Observation:", "Final conclusion:".
_LABEL = re.compile(r"^\s*[A-Za-z][A-Za-z ]{0,24}:\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def split_steps(text: str | None) -> list[str]:
    """The steps of a reasoning text.

    One step per non-empty line, with list markers (``1.``, ``Step 2:``, ``-``) removed; a
    reasoning written as one paragraph is split into its sentences instead.

    Args:
        text: The ``<think>`` text (None or blank gives no step).

    Returns:
        The steps, stripped, in order.
    """
    if not text or not text.strip():
        return []
    lines = [_MARKER.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) == 1:
        lines = [s.strip() for s in _SENTENCE_END.split(lines[0]) if s.strip()]
    return lines


def step_content(step: str) -> str:
    """A step without its label ("Observation: ..."), which every step of a kind shares."""
    stripped = _LABEL.sub("", step, count=1)
    return stripped if stripped.strip() else step


# Facts a sentence embedding barely sees: which side or place, which grade, yes or no, and
# whether a finding is denied. Two steps that disagree on one of them do not match.
_OPPOSITES = (
    ("left", "right"),
    ("medial", "lateral"),
    ("upper", "lower"),
    ("superior", "inferior"),
    ("supero", "infero"),
    ("anterior", "posterior"),
    ("nasal", "temporal"),
)
_GRADE_WORDS = {"absent": 0, "mild": 1, "moderate": 2, "severe": 3}
_GRADE = re.compile(r"\bgrade\s*:?\s*(\d+)", re.I)
_DENIAL = re.compile(
    r"^(?:(?:there\s+(?:is|are)\s+)?(?:no|none|nothing|without)\b"
    r"|i\s+(?:do\s+not|don't|cannot|can't)\s+see\b)",
    re.I,
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _grades(text: str) -> set[int]:
    found = {int(g) for g in _GRADE.findall(text)}
    return found or {g for w, g in _GRADE_WORDS.items() if w in _words(text)}


def contradicts(a: str, b: str) -> bool:
    """Whether two steps state incompatible facts that a sentence embedding cannot tell
    apart: opposite sides or places (left/right, medial/lateral, upper/lower, ...; also
    inside words such as "superotemporal"), different grades (``grade N`` or
    absent/mild/moderate/severe), different yes/no conclusions, or one denying a finding
    ("No ...", "There is no ...", "I do not see ...") where the other does not."""
    a, b = step_content(a), step_content(b)
    la, lb = a.lower(), b.lower()
    for x, y in _OPPOSITES:
        if (x in la and y not in la and y in lb and x not in lb) or (
            y in la and x not in la and x in lb and y not in lb
        ):
            return True
    ga, gb = _grades(a), _grades(b)
    if ga and gb and not ga & gb:
        return True
    ya, yb = extract_yes_no(a), extract_yes_no(b)
    if ya and yb and ya != yb:
        return True
    return bool(_DENIAL.match(a.strip())) != bool(_DENIAL.match(b.strip()))


def match_steps(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches ``(generated index, reference index)`` that maximise the summed
    similarity (scipy's ``linear_sum_assignment``), keeping the pairs at or above
    ``threshold``; sorted by generated index."""
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity, dtype=float)
    if sim.size == 0:
        return []
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True)
                  if sim[r, c] >= threshold)  # fmt: skip


@dataclass
class ReasoningScore:
    """One sample's reasoning quality (definitions in the module docstring).

    Attributes:
        steps: Generated steps.
        reference_steps: Reference steps.
        matched: Matched pairs.
        recall, precision, f1: Completeness, factuality against the reference, their F1.
        order: Share of concordant matched pairs (None with fewer than two matches).
        consistent: The conclusion of the reasoning is the answer (None: unreadable answer).
        per_100_tokens: Matched steps per 100 generated tokens (None without a count).
        per_second: Matched steps per second of generation (None without a time).
    """

    steps: int
    reference_steps: int
    matched: int
    recall: float
    precision: float | None
    f1: float
    order: float | None
    consistent: bool | None
    per_100_tokens: float | None = None
    per_second: float | None = None

    def as_row(self) -> dict[str, Any]:
        """The prediction-line keys: each field prefixed ``reasoning_``."""
        return {f"reasoning_{k}": v for k, v in asdict(self).items()}


ROW_KEYS = tuple(f"reasoning_{k}" for k in ReasoningScore.__dataclass_fields__)


def _order(matches: Sequence[tuple[int, int]]) -> float | None:
    refs = [r for _, r in sorted(matches)]
    pairs = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1 :]]
    return sum(a < b for a, b in pairs) / len(pairs) if pairs else None


def _read(text: str | None, answer_type: str | None, options: Any) -> Any:
    """The answer that ``text`` gives to a question of ``answer_type`` (None: unreadable)."""
    if not text:
        return None
    if answer_type == "choice":
        return extract_choice(text, options)
    if answer_type == "closed":
        return extract_yes_no(text)
    if answer_type == "severity":
        return extract_grade(text)
    if answer_type == "open":
        return text
    return None


def _consistent(steps: Sequence[str], answer: str | None, answer_type: str | None,
                options: Any) -> bool | None:  # fmt: skip
    said = _read(answer, answer_type, options)
    if said is None:
        return None
    for step in reversed(steps):
        concluded = _read(step_content(step), answer_type, options)
        if concluded is None:
            continue
        if answer_type == "open":
            return token_f1(concluded, said) >= 0.5
        return concluded == said
    return False


def score_reasoning(
    reasoning: str | None,
    reference: Sequence[str],
    matcher: StepMatcher,
    *,
    answer: str | None = None,
    answer_type: str | None = None,
    options: Mapping[str, str] | Sequence[str] | None = None,
    tokens: int | None = None,
    seconds: float | None = None,
) -> ReasoningScore:
    """Scores one reasoning against its reference steps.

    Args:
        reasoning: The ``<think>`` text (None: the model gave no reasoning, which scores recall
            and F1 0).
        reference: The Sample's ``reasoning`` steps (at least one).
        matcher: Supplies similarities and the threshold (`EmbeddingMatcher`, `JudgeMatcher`).
        answer: The ``<answer>`` text, for ``consistent``.
        answer_type: The question's type (``choice``, ``closed``, ``severity``, ``open``...).
        options: The choice options, for reading option text as a letter.
        tokens: Tokens generated, for ``per_100_tokens``.
        seconds: Generation time, for ``per_second``.

    Raises:
        ValueError: For an empty reference.
    """
    reference = [str(s) for s in reference if str(s).strip()]
    if not reference:
        raise ValueError("score_reasoning: the reference has no step")
    steps = split_steps(reasoning)
    matches = match_steps(matcher.similarity(steps, reference), matcher.threshold)
    m = len(matches)
    recall = m / len(reference)
    precision = m / len(steps) if steps else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return ReasoningScore(
        steps=len(steps), reference_steps=len(reference), matched=m, recall=recall,
        precision=precision, f1=f1, order=_order(matches),
        consistent=_consistent(steps, answer, answer_type, options),
        per_100_tokens=100.0 * m / tokens if tokens else None,
        per_second=m / seconds if seconds else None,
    )  # fmt: skip

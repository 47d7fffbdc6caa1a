"""Keeping a generated question set balanced: which option letter is right, which closed
question is asked with which answer, which finding's grade is asked (`AnswerBalancer`), and the
resulting shares (`answer_balance`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["LETTERS", "AnswerBalancer", "answer_balance"]

LETTERS = "ABCD"


class AnswerBalancer:
    """Deterministic choices that keep answers balanced across a generated set.

    One balancer must see the whole set, in order; `phantom_samples` makes one per call.
    """

    def __init__(self) -> None:
        self.letters: Counter[str] = Counter()
        self.family_letters: dict[str, Counter[str]] = {}
        self.closed: dict[str, Counter[str]] = {}
        self.grades: Counter[tuple[str, str, int]] = Counter()

    def letter(self, family: str) -> int:
        """Index of the letter the next correct answer of ``family`` should take."""
        fam = self.family_letters.setdefault(family, Counter())
        pick = min(LETTERS, key=lambda c: (self.letters[c], fam[c], c))
        self.letters[pick] += 1
        fam[pick] += 1
        return LETTERS.index(pick)

    def graded(self, family: str, findings: list, start: int):
        """The finding to grade: the one whose (finding, grade) pair was asked least so far.

        Half the findings are absent, so always asking the same one would make "grade 0" the
        right answer half the time; this keeps each finding's asked grades close to uniform.
        """
        order = findings[start % len(findings) :] + findings[: start % len(findings)]
        pick = min(order, key=lambda f: self.grades[family, f.name, f.severity])
        self.grades[family, pick.name, pick.severity] += 1
        return pick

    def closed_pick(self, answer: str, candidates: list[str]) -> str:
        """Of the question keys that would be answered ``answer``, the one most owed it."""
        other = "no" if answer == "yes" else "yes"

        def owed(key: str) -> int:
            c = self.closed.get(key, Counter())
            return c[answer] - c[other]

        key = min(candidates, key=owed)  # ties keep the candidates' order
        self.closed.setdefault(key, Counter())[answer] += 1
        return key


def answer_balance(samples: Iterable[Any]) -> dict[str, dict[str, float]]:
    """Share of each option letter among ``choice`` answers and of yes/no among ``closed``."""
    counts: dict[str, Counter[str]] = {"choice": Counter(), "closed": Counter()}
    for s in samples:
        if s.answer_type in counts:
            counts[s.answer_type][s.answer] += 1
    keys = {"choice": tuple(LETTERS), "closed": ("yes", "no")}
    return {
        kind: {k: c[k] / max(sum(c.values()), 1) for k in keys[kind]} for kind, c in counts.items()
    }

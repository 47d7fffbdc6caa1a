"""medvl.data.balance: balanced answers across a generated question set."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from medvl.data.balance import LETTERS, AnswerBalancer, answer_balance


def test_correct_letters_rotate_evenly_within_each_question_family():
    balancer = AnswerBalancer()
    picks = [LETTERS[balancer.letter("chest-where")] for _ in range(8)]
    assert Counter(picks) == Counter({c: 2 for c in LETTERS})
    assert picks[:4] == list(LETTERS)


def test_closed_questions_alternate_yes_and_no_per_key():
    balancer = AnswerBalancer()
    keys = ["effusion", "nodule"]
    asked = [balancer.closed_pick(a, keys) for a in ("yes", "yes", "no", "no")]
    assert asked == ["effusion", "nodule", "effusion", "nodule"]


def test_grades_asked_stay_close_to_uniform():
    finding = lambda name, grade: SimpleNamespace(name=name, severity=grade)  # noqa: E731
    findings = [finding("nodule", 0), finding("effusion", 2)]
    balancer = AnswerBalancer()
    picked = [balancer.graded("chest", findings, start=0).name for _ in range(4)]
    assert Counter(picked) == {"nodule": 2, "effusion": 2}


def test_answer_balance_reports_shares():
    rows = [SimpleNamespace(answer_type="choice", answer=c) for c in "AABC"]
    rows += [SimpleNamespace(answer_type="closed", answer=a) for a in ("yes", "no", "no", "no")]
    shares = answer_balance(rows)
    assert shares["choice"] == {"A": 0.5, "B": 0.25, "C": 0.25, "D": 0.0}
    assert shares["closed"] == {"yes": 0.25, "no": 0.75}

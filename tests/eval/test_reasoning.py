"""Reasoning quality: steps, the contradiction veto, matching and scores."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.eval.reasoning import contradicts, match_steps, score_reasoning, split_steps


class ExactMatcher:
    """Similarity 1 for the same words (case and punctuation aside), else 0: a matcher whose
    scores are known by hand."""

    threshold = 0.5

    @staticmethod
    def _key(text: str) -> str:
        return " ".join("".join(c for c in text.lower() if c.isalnum() or c == " ").split())

    def similarity(self, generated, reference):
        return np.array([[float(self._key(g) == self._key(r)) for r in reference]
                         for g in generated]).reshape(len(generated), len(reference))  # fmt: skip


# -- steps ------------------------------------------------------------------------------------


def test_split_steps_reads_lines_markers_and_paragraphs():
    assert split_steps("1. Modality: MRI.\n2) Observation: tear.\n\n- Conclusion: yes.") == [
        "Modality: MRI.", "Observation: tear.", "Conclusion: yes."]  # fmt: skip
    assert split_steps("Step 1: look.\nStep 2: decide.") == ["look.", "decide."]
    assert split_steps("This is a knee MRI. There is a tear. So yes.") == [
        "This is a knee MRI.", "There is a tear.", "So yes."]  # fmt: skip
    assert split_steps("") == [] and split_steps(None) == [] and split_steps("  \n ") == []


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a nodule in the right upper zone", "a nodule in the left upper zone", True),
        ("signal in the medial femoral condyle", "signal in the lateral femoral condyle", True),
        ("haemorrhages, the largest superotemporal", "haemorrhages, the largest inferotemporal",
         True),
        ("the tear is moderate (grade 2)", "the tear is severe (grade 3)", True),
        ("Final grade: 3.", "Conclusion: grade 3.", False),
        ("the effusion is mild", "Conclusion: the effusion is moderate (grade 2).", True),
        ("So the answer is yes.", "Conclusion: no.", True),
        ("No pleural effusion is seen.", "There is a pleural effusion at the left base.", True),
        ("I do not see any effusion.", "Observation: no pleural effusion is seen.", False),
        ("a nodule in the right upper zone", "Observation: a nodule in the right upper zone.",
         False),
    ],
)  # fmt: skip
def test_contradicts_sides_grades_answers_and_denials(a, b, expected):
    assert contradicts(a, b) is expected
    assert contradicts(b, a) is expected


# -- matching and scores ----------------------------------------------------------------------


def test_match_steps_maximises_the_total_not_greedily():
    # Greedy would take (0, 0) = 0.9 and leave (1, 1) = 0.1 below the threshold: one match.
    sim = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert match_steps(sim, 0.5) == [(0, 1), (1, 0)]
    assert match_steps(sim, 0.82) == [(1, 0)]  # 0.8 dropped: one pair left
    assert match_steps(np.zeros((0, 3)), 0.5) == []


def test_score_reasoning_by_hand():
    reference = ["chest X-ray.", "A nodule.", "yes"]
    # 4 generated steps, 2 match (the first and last reference steps), in order.
    reasoning = "Chest X-ray.\nI look closely.\nSomething odd.\nYes."
    s = score_reasoning(reasoning, reference, ExactMatcher(), answer="yes",
                        answer_type="closed", tokens=40, seconds=2.0)  # fmt: skip
    assert (s.steps, s.reference_steps, s.matched) == (4, 3, 2)
    assert s.recall == pytest.approx(2 / 3)
    assert s.precision == pytest.approx(2 / 4)
    assert s.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert s.order == 1.0
    assert s.consistent is True
    assert s.per_100_tokens == pytest.approx(5.0) and s.per_second == pytest.approx(1.0)
    row = s.as_row()
    assert row["reasoning_f1"] == s.f1 and row["reasoning_consistent"] is True


def test_score_reasoning_order_and_consistency():
    reference = ["a.", "b.", "c.", "yes."]
    s = score_reasoning("c.\nb.\na.\nSo the answer is no.", reference, ExactMatcher(),
                        answer="yes", answer_type="closed")  # fmt: skip
    assert s.matched == 3 and s.order == 0.0  # reversed: no concordant pair
    assert s.consistent is False  # the reasoning concludes no, the answer says yes
    s = score_reasoning("a.\nc.\nb.", reference, ExactMatcher(), answer="yes",
                        answer_type="closed")  # fmt: skip
    assert s.order == pytest.approx(2 / 3)  # (a,c) (a,b) concordant, (c,b) not
    assert s.consistent is False  # no step reads as an answer
    s = score_reasoning("The tear is severe (grade 3).", ["grade 3."],
                        ExactMatcher(), answer="C", answer_type="choice",
                        options={"A": "mild (grade 1)", "B": "moderate (grade 2)",
                                 "C": "severe (grade 3)", "D": "absent (grade 0)"})  # fmt: skip
    assert s.consistent is True
    assert score_reasoning("x.", ["y."], ExactMatcher(), answer="maybe",
                           answer_type="closed").consistent is None  # fmt: skip


def test_score_reasoning_without_reasoning_scores_zero_recall():
    s = score_reasoning(None, ["a.", "b."], ExactMatcher())
    assert (s.steps, s.recall, s.precision, s.f1, s.order) == (0, 0.0, None, 0.0, None)
    with pytest.raises(ValueError, match="no step"):
        score_reasoning("a.", ["  "], ExactMatcher())

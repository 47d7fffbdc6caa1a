"""medvl.eval.extract: reading answers conservatively, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvl.eval import extract_choice, extract_grade, extract_yes_no, normalize_text
from medvl.eval.extract import is_hedge

OPTIONS = {"A": "Meniscal tear", "B": "No tear", "C": "Bone bruise", "D": "Joint effusion"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("[C]", "C"),
        ("**D**", "D"),
        (" B) ", "B"),
        ("Answer: B", "B"),
        ("answer:(c)", "C"),
        ("The answer is b", "B"),
        ("the answer is b because the fragment is displaced", "B"),
        ("Option D", "D"),
        ("B. No tear", "B"),
        ("(C) Bone bruise", "C"),
        ("C) Bone bruise", "C"),
        ("B. B is correct", "B"),
        ("I think it is B", "B"),
        ("No tear", "B"),  # the option's text instead of its letter
        ("no tear.", "B"),
        ("There is a joint effusion", "D"),
        ("The answer is a meniscal tear", "A"),  # "a" is an article here, the text decides
        ("B or C", None),
        ("B and C", None),
        ("The answer is B or C", None),
        ("Answer: B, Answer: C", None),
        ("A tear is visible", None),  # an article, and "tear" is no option's whole text
        ("answer is E", None),  # not an option
        ("E", None),
        ("", None),
        ("   ", None),
        ("I cannot tell", None),
        ("Meniscal tear or bone bruise", None),
        # Hedges choose nothing (they used to read as their last letter, or as the negated one).
        ("A or B", None),
        ("(A) or (B)", None),
        ("Either A or C", None),
        ("Both A and C", None),
        ("A/B", None),
        ("Not A", None),
        ("The answer is not A", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, OPTIONS) == expected


def test_extract_choice_without_options_and_with_letters():
    assert extract_choice("the answer is c") == "C"
    assert extract_choice("No tear") is None  # no option texts to match
    assert extract_choice("D", ["A", "B", "C"]) is None
    assert extract_choice("(c)", "ABC") == "C"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("YES", "yes"),
        ("**Yes**", "yes"),
        ("Yes, there is a tear.", "yes"),
        ("No", "no"),
        ("no, there is not", "no"),
        ("No. The meniscus is intact.", "no"),
        ("Nope", "no"),
        ("The answer is yes", "yes"),
        ("Answer: no", "no"),
        ("There is no effusion", None),  # conservative: a negated finding is not a "no"
        ("I see no tear", None),
        ("yes or no", None),
        ("No. The answer is yes", None),  # contradicts itself
        ("yesterday", None),
        ("not sure", None),
        ("present", None),
        ("", None),
    ],
)
def test_extract_yes_no(text, expected):
    assert extract_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "max_grade", "expected"),
    [
        ("2", None, 2),
        ("Grade 2.", None, 2),
        ("grade II", None, 2),
        ("Stage iv", None, 4),
        ("two", None, 2),
        ("0", None, 0),
        ("2/4", 4, 2),
        ("3 out of 4", 4, 3),
        ("KL 3", 4, 3),
        ("KL-3", 4, 3),
        ("Grade 3 (severe)", None, 3),
        ("2.5", None, None),
        ("-1", None, None),
        ("2-3", None, None),
        ("grade 1 or 2", None, None),
        ("grade 5", 4, None),
        ("grade 5", None, 5),
        ("severe", None, None),
        ("", None, None),
    ],
)
def test_extract_grade(text, max_grade, expected):
    assert extract_grade(text, max_grade=max_grade) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(), st.none(), st.integers(), st.lists(st.text())),
    st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=2), st.text(), max_size=4),
        st.lists(st.text(max_size=2), max_size=4),
    ),
)
def test_extraction_never_raises(text, options):
    letter = extract_choice(text, options)
    assert letter is None or (len(letter) == 1 and letter.isupper())
    assert extract_yes_no(text) in (None, "yes", "no")
    grade = extract_grade(text, max_grade=4)
    assert grade is None or 0 <= grade <= 4
    assert isinstance(normalize_text(text), str)


@pytest.mark.parametrize(
    ("text", "hedge"),
    [("A or B", True), ("(a) or (b)", True), ("B, D", True), ("C & D", True),
     ("not option B", True), ("B", False), ("A tear or B", False), ("B and only B", False),
     ("a or an effusion", False), ("E or F", False), (None, False)],
)  # fmt: skip
def test_is_hedge(text, hedge):
    assert is_hedge(text, OPTIONS) is hedge


@pytest.mark.parametrize(
    ("text", "letters"),
    [("B, D", {"B", "D"}), ("(B) and (C)", {"B", "C"}), ("A B D", {"A", "B", "D"}),
     ("The answers are B, C and D", {"B", "C", "D"}), ("B", {"B"}), ("No tear", {"B"}),
     ("B or C", None), ("not A", None), ("E, F", None), ("", None)],
)  # fmt: skip
def test_extract_choices_reads_a_set(text, letters):
    from medvl.eval.extract import extract_choices

    got = extract_choices(text, OPTIONS)
    assert got == (None if letters is None else frozenset(letters))


# The misreadings found by judging 150 real-style outputs by hand (issue 11), one case each.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A or B", None),
        ("(A) or (B)", None),
        ("Either A or C", None),
        ("Both A and C", None),
        ("Not A", None),
        ("The answer is not A", None),
        ("\\boxed{C}", "C"),
        ("The final answer is $\\boxed{D}$.", "D"),
        ("B\nA meniscal tear would show a linear signal, which is absent here.", "B"),
        ("Option B, i.e. no tear", "B"),
        ("<answer> c </answer>"[8:-9], "C"),
    ],
)
def test_extract_choice_misreadings(text, expected):
    assert extract_choice(text, OPTIONS) == expected


@pytest.mark.parametrize(
    ("text", "question", "expected"),
    [
        ("yes/no", None, None),
        ("yes, no", None, None),
        ("Yes; no", None, None),
        ("No idea.", None, None),
        ("No comment", None, None),
        ("No way to tell from this image.", None, None),
        ("Yes, no tear is seen.", None, "yes"),  # "no" inside the explanation
        ("\\boxed{yes}", None, "yes"),
        ("\\boxed{No}", None, "no"),
        ("Normal", "Is there any abnormality?", "no"),
        ("Normal.", "Is this knee MRI normal?", "yes"),
        ("Unremarkable study", "Is there an abnormality in the lungs?", "no"),
        ("Abnormal", "Is this chest X-ray normal?", "no"),
        ("Absent", "Is there a pleural effusion?", "no"),
        ("No evidence of effusion.", "Is there a joint effusion?", "no"),
        ("No evidence of fracture.", "Is the wrist normal?", "yes"),
        ("Present", "Is there a meniscal tear?", "yes"),
        ("There is a tear of the posterior horn.", "Is there a meniscal tear?", "yes"),
        ("There is no tear.", "Is there a meniscal tear?", "no"),
        ("Absent", None, None),  # without the question a statement is not read
        ("Normal", None, None),
    ],
)
def test_extract_yes_no_misreadings_and_the_question(text, question, expected):
    assert extract_yes_no(text, question) == expected


def test_agreement_with_the_judged_replies():
    """On the 150+ replies judged by hand, answer_correct agrees with the verdict on at least
    98% and never scores a reply judged wrong (a hedge, a refusal, a wrong answer) as right:
    in GRPO that would be a reward for it."""
    from extraction_cases import CASES

    from medvl.eval.metrics import answer_correct

    assert len(CASES) >= 150
    scored = [(bool(answer_correct(r, ref, kind, opts, q)), ok)
              for r, ref, kind, ok, q, opts in CASES]  # fmt: skip
    assert sum(s == ok for s, ok in scored) / len(CASES) >= 0.98
    wrongly_paid = [c for c, (s, ok) in zip(CASES, scored, strict=True) if s and not ok]
    assert wrongly_paid == []

"""medvl.eval.normalize: SQuAD's normalisation with the medical-answer fixes, unboxing, cues."""

from __future__ import annotations

import pytest

from medvl.eval.metrics import answer_correct
from medvl.eval.normalize import normalize_text, strip_answer_cue, unbox


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Medial Meniscus.", "medial meniscus"),  # SQuAD: case, punctuation, articles
        ("  an   apple, a  day!", "apple day"),
        ("THE", ""),
        (None, ""),
        ("Left-sided", "left sided"),  # a hyphen separates words
        ("T2-weighted", "t2 weighted"),
        ("T1/T2", "t1 t2"),
        ("2cm", "2 cm"),  # a unit is split from its number
        ("2.0 cm", "2 cm"),  # trailing zeros dropped, the decimal point kept
        ("2.50mm", "2.5 mm"),
        ("2.5", "2.5"),  # not "25"
        ("two lesions", "2 lesions"),  # number words
        ("\\boxed{Meniscal tear}", "meniscal tear"),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_unbox_and_answer_cues():
    assert unbox("so \\boxed{B} it is") == "so B it is"
    assert unbox("\\boxed{\\text{yes}}") == "\\text{yes}"  # one level of nested braces kept
    assert unbox(3) == 3
    assert strip_answer_cue("Answer: meniscal tear") == "meniscal tear"
    assert strip_answer_cue("The final answer is joint effusion") == "joint effusion"
    assert strip_answer_cue("Therefore, the answer is: cyst") == "cyst"
    assert strip_answer_cue("answering machine") == "answering machine"


@pytest.mark.parametrize(
    ("said", "reference", "right"),
    [
        ("T2-weighted", "t2 weighted", True),
        ("2cm", "2 cm", True),
        ("2.0", "2", True),
        ("two", "2", True),
        ("25", "2.5", False),
        ("Answer: meniscal tear", "meniscal tear", True),
        ("\\boxed{meniscal tear}", "meniscal tear", True),
        ("joint effusion, meniscal tear", "meniscal tear, joint effusion", True),
    ],
)
def test_open_answers_read_as_meant(said, reference, right):
    assert answer_correct(said, reference, "open") is right

"""Text metrics: BLEU, ROUGE-L, findings sets, severity error and quadratic-weighted kappa."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medvl.eval.metrics import answer_correct
from medvl.eval.text_metrics import (
    bleu,
    findings,
    quadratic_kappa,
    rouge_l,
    same_findings,
    severity_error,
    worst_grade,
)


def test_rouge_l_is_the_lcs_f_measure():
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4.
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # LCS 2 of 2 predicted and 4 reference tokens: P 1, R 1/2, F 2/3.
    assert rouge_l("meniscal tear", "a small meniscal tear") == pytest.approx(2 / 3)
    assert rouge_l("", "tear") == 0.0 and rouge_l(None, None) == 1.0


def test_bleu_by_hand_and_its_range():
    assert bleu("joint effusion is present", "Joint effusion is present") == pytest.approx(1.0)
    assert bleu("cat", "meniscal tear") == pytest.approx(0.0, abs=1e-6)
    # Four tokens, all unigrams right, one of three bigrams: worse than the same words in order.
    scrambled = bleu("present is effusion joint", "joint effusion is present")
    assert 0.0 < scrambled < 0.5
    assert bleu("", "tear") == 0.0


def test_findings_are_sets_of_normalised_items():
    assert findings("Meniscal tear, joint effusion; and a Baker's cyst") == {
        "meniscal tear", "joint effusion", "bakers cyst"}  # fmt: skip
    assert same_findings("joint effusion and meniscal tear", "meniscal tear, joint effusion")
    assert not same_findings("meniscal tear", "meniscal tear, joint effusion")
    assert not same_findings("", "") and findings(None) == frozenset()
    assert answer_correct("joint effusion, meniscal tear", "meniscal tear, joint effusion", "open")
    assert not answer_correct("joint effusion", "meniscal tear, joint effusion", "open")


@pytest.mark.parametrize(
    ("reply", "true", "top", "expected"),
    [
        ("grade 2", 3, 3, 1.0),
        ("unsure", 3, 3, 3.0),  # worst grade for a 3 on 0-3 is 0
        ("unsure", 1, 3, 2.0),  # ... for a 1 it is 3
        ("Grade 10", 1, 3, 2.0),  # off the scale reads as unreadable
        ("unsure", 2, 4, 2.0),  # a tie (0 or 4) goes to the top: |4 - 2|
        ("unsure", 2, None, None),  # no scale, no worst error
        (1, 3, 3, 2.0),
    ],
)
def test_severity_error_counts_unreadable_at_the_worst(reply, true, top, expected):
    assert severity_error(reply, true, top) == expected


def test_worst_grade():
    assert [worst_grade(t, 3) for t in range(4)] == [3, 3, 0, 0]
    assert [worst_grade(t, 4) for t in range(5)] == [4, 4, 4, 0, 0]


def test_quadratic_kappa_by_hand_and_against_scikit_learn():
    # Two raters, grades 0-1, 4 items: agree on 3. Observed weighted disagreement 1/4; expected
    # from the margins (true 2x0 2x1, pred 3x0 1x1): P(0,1)+P(1,0) = 2/4*1/4 + 2/4*3/4 = 1/2.
    assert quadratic_kappa([0, 0, 0, 1], [0, 0, 1, 1], 1) == pytest.approx(1 - 0.25 / 0.5)
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, size=60).tolist()
    pred = [min(3, max(0, t + int(rng.integers(-1, 2)))) for t in true]
    expected = cohen_kappa_score(true, pred, weights="quadratic", labels=[0, 1, 2, 3])
    assert quadratic_kappa(pred, true, 3) == pytest.approx(expected)
    assert quadratic_kappa(true, true, 3) == pytest.approx(1.0)
    assert math.isnan(quadratic_kappa([1], [1], 3))
    with pytest.raises(ValueError, match="2 predictions for 3"):
        quadratic_kappa([0, 1], [0, 1, 2], 3)

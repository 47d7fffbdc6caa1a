"""The baselines (chance, answer prior, mean box) and the learning table built on them."""

from __future__ import annotations

import pytest

from medvl.data import Sample
from medvl.eval.baselines import chance_accuracy, fit_mean_box, mean_box_ious, prior_accuracy
from medvl.eval.learning import learning_table

OPTIONS = {"A": "a", "B": "b", "C": "c", "D": "d"}


def _s(i, kind, answer, anatomy="chest", box=None, severity=None, question="q?") -> Sample:
    record = {"id": f"s{i}", "image": f"{i}.png", "modality": "X-ray", "anatomy": anatomy,
              "question": question, "answer": answer, "answer_type": kind}  # fmt: skip
    if kind == "choice":
        record["options"] = OPTIONS
    if box is not None:
        record["box"] = box
    if severity is not None:
        record["severity"] = severity
    return Sample.from_dict(record)


def test_chance_and_prior():
    train = [_s(0, "closed", "yes"), _s(1, "closed", "yes"), _s(2, "closed", "no"),
             _s(3, "choice", "B"), _s(4, "severity", "2", severity=2)]  # fmt: skip
    test = [_s(10, "closed", "yes"), _s(11, "closed", "no"), _s(12, "choice", "B"),
            _s(13, "choice", "C"), _s(14, "severity", "1", severity=1),
            _s(15, "severity", "2", severity=2), _s(16, "severity", "3", severity=3),
            _s(17, "severity", "0", severity=0)]  # fmt: skip
    assert chance_accuracy(test) == {"choice": 0.25, "closed": 0.5, "severity": 0.25}
    assert prior_accuracy(train, test) == {"choice": 0.5, "closed": 0.5, "severity": 0.25}
    # A (type, anatomy) never seen in training scores 0.
    assert prior_accuracy(train, [_s(20, "closed", "yes", anatomy="knee")]) == {"closed": 0.0}


def test_mean_box_is_fitted_per_modality_and_scored_by_iou():
    train = [_s(0, "grounding", "x", box=[0.0, 0.0, 0.5, 0.5]),
             _s(1, "grounding", "x", box=[0.5, 0.5, 1.0, 1.0])]  # fmt: skip
    boxes = fit_mean_box(train)
    assert boxes == {("X-ray", 4, "q?"): [0.25, 0.25, 0.75, 0.75],
                     ("X-ray", 4, ""): [0.25, 0.25, 0.75, 0.75]}  # fmt: skip
    ious = mean_box_ious(boxes, [_s(5, "grounding", "x", box=[0.25, 0.25, 0.75, 0.75]),
                                 _s(6, "grounding", "x", box=[0.0, 0.0, 0.25, 0.25])])  # fmt: skip
    assert ious == {"s5": pytest.approx(1.0), "s6": pytest.approx(0.0)}


def test_mean_box_knows_where_each_question_points():
    heart, lung = [0.4, 0.5, 0.7, 0.8], [0.1, 0.1, 0.4, 0.7]
    train = [_s(0, "grounding", "x", box=heart, question="Locate the heart."),
             _s(1, "grounding", "x", box=lung, question="Locate the right lung.")]  # fmt: skip
    test = [_s(5, "grounding", "x", box=heart, question="Locate the heart."),
            _s(6, "grounding", "x", box=lung, question="Locate the right lung."),
            _s(7, "grounding", "x", box=heart, question="Locate the nodule.")]  # fmt: skip
    ious = mean_box_ious(fit_mean_box(train), test)
    assert ious["s5"] == pytest.approx(1.0) and ious["s6"] == pytest.approx(1.0)
    assert 0.0 < ious["s7"] < 1.0  # an unseen question gets the modality's mean box


def _rows(samples, correct, iou=None):
    return [{"id": s.id, "answer_type": s.answer_type, "correct": c, "well_formed": True,
             "iou": None if iou is None else iou[k]}
            for k, (s, c) in enumerate(zip(samples, correct, strict=True))]  # fmt: skip


def test_learning_table_separates_reading_from_guessing():
    test = [_s(i, "closed", "yes" if i % 2 else "no") for i in range(40)]
    train = [_s(100 + i, "closed", "yes" if i % 2 else "no") for i in range(40)]
    own = _rows(test, [True] * 36 + [False] * 4)  # reads the scan
    swapped = _rows(test, [i % 2 == 0 for i in range(40)])  # at chance
    table = learning_table(own, swapped, train, test)
    (row,) = table.rows
    assert row.answer_type == "closed" and row.accuracy.estimate == pytest.approx(0.9)
    assert row.chance == 0.5 and row.bar == 0.5 and row.beats_bar
    assert row.swapped.estimate == pytest.approx(0.5)
    assert row.own_vs_swapped.difference == pytest.approx(0.4)
    assert row.own_vs_swapped.p_value < 0.01
    assert table.well_formed.estimate == 1.0 and table.n == 40
    text = table.to_markdown()
    assert "| closed | 40 | 0.900" in text and "+0.400" in text
    # A model at chance does not beat the bar.
    blind = learning_table(swapped, own, train, test)
    assert not blind.rows[0].beats_bar


def test_learning_table_compares_boxes_with_the_mean_box():
    train = [_s(0, "grounding", "x", box=[0.0, 0.0, 0.5, 0.5]),
             _s(1, "grounding", "x", box=[0.5, 0.5, 1.0, 1.0])]  # fmt: skip
    test = [_s(10 + i, "grounding", "x", box=[0.0, 0.0, 0.5, 0.5]) for i in range(20)]
    own = _rows(test, [False] * 20, iou=[0.9] * 20)
    table = learning_table(own, None, train, test)
    assert table.iou.estimate == pytest.approx(0.9)
    assert table.mean_box_iou == pytest.approx(1 / 7)  # 0.0625 / (0.25 + 0.25 - 0.0625)
    assert table.iou_vs_mean_box.difference > 0.5 and table.iou_vs_mean_box.low > 0
    assert table.rows == ()


def test_missing_swapped_ids_are_an_error():
    test = [_s(i, "closed", "yes") for i in range(3)]
    with pytest.raises(ValueError, match="swapped predictions lack 1 ids"):
        learning_table(_rows(test, [True] * 3), _rows(test[:2], [True] * 2), test, test)


def test_learning_table_reports_reasoning_f1_own_against_swapped():
    test = [_s(i, "closed", "yes" if i % 2 else "no") for i in range(20)]
    own = _rows(test, [True] * 20)
    swapped = _rows(test, [False] * 20)
    for k, (a, b) in enumerate(zip(own, swapped, strict=True)):
        a["reasoning_f1"], b["reasoning_f1"] = 1.0 if k < 15 else 0.5, 0.5
    table = learning_table(own, swapped, test, test)
    assert table.reasoning_f1.estimate == pytest.approx((15 + 2.5) / 20)
    assert table.swapped_reasoning_f1.estimate == pytest.approx(0.5)
    assert table.reasoning_vs_swapped.difference == pytest.approx(0.375)
    assert "Reasoning step F1: 0.875" in table.to_markdown() and "+0.375" in table.to_markdown()
    plain = learning_table(_rows(test, [True] * 20), None, test, test)
    assert plain.reasoning_f1 is None and "Reasoning" not in plain.to_markdown()

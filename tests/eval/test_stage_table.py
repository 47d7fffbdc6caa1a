"""The stage table: each stage's accuracy on the same questions, and the paired gain."""

import pytest

from medvl.data.sample import Sample
from medvl.eval.stage_table import stage_table, stage_tables_by_type


def _sample(i: int, answer: str) -> Sample:
    return Sample(id=f"s{i}", image=f"s{i}.png", question="Is there a nodule?", answer=answer,
                  answer_type="closed", modality="X-ray", anatomy="chest")  # fmt: skip


def _rows(correct: list[bool], formed: bool = True) -> list[dict]:
    return [{"id": f"s{i}", "correct": c, "well_formed": formed} for i, c in enumerate(correct)]


TEST = [_sample(i, "yes" if i % 2 else "no") for i in range(40)]
TRAIN = [_sample(100 + i, "yes" if i % 4 else "no") for i in range(40)]  # 3/4 "yes"


def test_rows_chance_prior_and_a_real_gain() -> None:
    sft = [i < 20 for i in range(40)]  # 0.5
    grpo = [i < 36 for i in range(40)]  # 0.9: right on every question SFT got right, and 16 more
    table = stage_table(
        {"base": (_rows([False] * 40, formed=False), None), "sft": (_rows(sft), _rows(sft)),
         "grpo": (_rows(grpo), _rows([i % 2 == 0 for i in range(40)]))},
        TRAIN, TEST, compare=("grpo", "sft"),
    )  # fmt: skip
    assert [r.name for r in table.rows] == ["base", "sft", "grpo"]
    assert table.row("grpo").accuracy.estimate == pytest.approx(0.9)
    assert table.row("grpo").swapped.estimate == pytest.approx(0.5)
    assert table.row("base").swapped is None and table.row("base").well_formed.estimate == 0
    assert table.chance == pytest.approx(0.5) and table.prior == pytest.approx(0.5)
    assert table.gain.difference == pytest.approx(0.4) and table.gain.low > 0.2
    assert table.gain_is_real and table.mcnemar.p_value < 1e-3
    text = table.to_markdown()
    assert "| grpo | 40 | 0.900 [" in text and "grpo − sft: +0.400 [" in text


def test_no_gain_when_the_stages_agree() -> None:
    same = [i % 3 == 0 for i in range(40)]
    table = stage_table({"sft": (_rows(same), None), "grpo": (_rows(same), None)}, TRAIN, TEST,
                        compare=("grpo", "sft"))  # fmt: skip
    assert table.gain.difference == 0 and not table.gain_is_real
    assert table.mcnemar.p_value == pytest.approx(1.0)


def test_stages_must_answer_the_same_questions() -> None:
    with pytest.raises(ValueError, match="'grpo' answered other ids"):
        stage_table({"sft": (_rows([True] * 40), None), "grpo": (_rows([True] * 39), None)},
                    TRAIN, TEST)  # fmt: skip
    with pytest.raises(ValueError, match="unknown stages"):
        stage_table({"sft": (_rows([True] * 40), None)}, TRAIN, TEST, compare=("rl", "sft"))


def _box_sample(i: int, box: list[float]) -> Sample:
    return Sample(id=f"g{i}", image=f"g{i}.png", question="Locate the nodule.", answer="box",
                  answer_type="grounding", modality="X-ray", anatomy="chest", box=box)  # fmt: skip


def test_grounding_rows_give_iou_its_gain_and_the_mean_box_baseline() -> None:
    # Boxes alternate between two places, so the training mean box overlaps neither well.
    places = [[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]]
    train = [_box_sample(100 + i, places[i % 2]) for i in range(20)]
    test = [_box_sample(i, places[i % 2]) for i in range(20)] + TEST[:20]
    closed = _rows([i < 10 for i in range(20)])
    sft = [{"id": f"g{i}", "correct": False, "well_formed": True, "iou": 0.2} for i in range(20)]
    grpo = [{"id": f"g{i}", "correct": i < 15, "well_formed": True, "iou": 0.6 if i < 15 else 0.1}
            for i in range(20)]  # fmt: skip
    stages = {"sft": (sft + closed, None), "grpo": (grpo + closed, None)}
    table = stage_table(stages, train + TRAIN, test, compare=("grpo", "sft"))
    assert table.row("sft").mean_iou.estimate == pytest.approx(0.2)
    assert table.row("grpo").mean_iou.estimate == pytest.approx((15 * 0.6 + 5 * 0.1) / 20)
    assert table.iou_gain.difference == pytest.approx(0.475 - 0.2) and table.iou_gain.low > 0
    assert table.mean_box_iou < 0.2  # the mean of two far-apart boxes
    assert "mean IoU [95% CI]" in table.to_markdown() and "grpo − sft, IoU: +0.275" in (
        table.to_markdown())

    by_type = stage_tables_by_type(stages, train + TRAIN, test, compare=("grpo", "sft"))
    assert list(by_type) == ["grounding", "closed"]
    assert by_type["grounding"].row("grpo").accuracy.estimate == pytest.approx(0.75)
    assert by_type["grounding"].prior == 0.0  # the mean box never reaches IoU 0.5
    assert by_type["closed"].row("grpo").mean_iou is None and by_type["closed"].iou_gain is None
    assert by_type["closed"].gain.difference == 0 and by_type["closed"].row("sft").accuracy.n == 20
    assert by_type["grounding"].gain_is_real and not by_type["closed"].gain_is_real


def test_boxes_moving_towards_the_mean_box_are_no_real_gain() -> None:
    """GRPO's boxes overlap the truth more than SFT's, but no more than the training mean box
    does without looking: the IoU gain's CI is above 0 and still no gain is claimed."""
    box = [0.2, 0.2, 0.6, 0.6]
    train = [_box_sample(100 + i, box) for i in range(20)]  # the mean box is the truth
    test = [_box_sample(i, box) for i in range(20)]

    def rows(iou: float) -> list[dict]:
        return [{"id": f"g{i}", "correct": iou >= 0.5, "well_formed": True, "iou": iou + i / 1000}
                for i in range(20)]  # fmt: skip

    towards = stage_table({"sft": (rows(0.2), None), "grpo": (rows(0.4), None)}, train, test,
                          compare=("grpo", "sft"))  # fmt: skip
    assert towards.mean_box_iou == pytest.approx(1.0) and towards.iou_gain.low > 0.15
    assert not towards.gain_is_real

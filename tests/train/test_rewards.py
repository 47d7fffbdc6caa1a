"""GRPO rewards with TRL's signature (medvl.train.rewards)."""

from __future__ import annotations

import inspect

import pytest

from medvl.model.grounding import format_box, format_box_3d
from medvl.train.reasoning_reward import reasoning_length_reward
from medvl.train.rewards import (
    DEFAULT_REWARDS,
    accuracy_reward,
    box_iou_reward,
    completion_text,
    default_rewards,
    format_reward,
    severity_reward,
)

OPTIONS = {"A": "Meniscal tear", "B": "No tear"}


def reply(answer: str, think: str | None = "The meniscus shows a linear signal.") -> str:
    head = "" if think is None else f"<think>\n{think}\n</think>\n"
    return f"{head}<answer>{answer}</answer>"


def chat(text: str) -> list[dict[str, str]]:
    """A TRL conversational completion."""
    return [{"role": "assistant", "content": text}]


@pytest.fixture(params=["string", "conversational"])
def wrap(request):
    return (lambda text: text) if request.param == "string" else chat


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text(chat("abc")) == "abc"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]
    assert completion_text(parts) == "ab"
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    assert completion_text(None) == ""


def test_format_reward(wrap):
    completions = [
        reply("B"),
        reply("B", think=None),  # no reasoning block
        "B",
        "<think>x</think><answer>B</answer> trailing",
        "<think>a<think>b</think></think><answer>B</answer>",
    ]
    assert format_reward([wrap(c) for c in completions]) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_accuracy_reward_per_answer_type(wrap):
    completions = [
        reply("B"),
        reply("Meniscal tear"),  # the option's text: A, the answer is B
        reply("Yes."),
        reply("The medial meniscus"),
        reply("Grade 2"),
        reply('{"bbox_2d": [1, 2, 3, 4]}'),
        "no",  # bare reply, no tags: still read
    ]
    rewards = accuracy_reward(
        [wrap(c) for c in completions],
        answer=["B", "B", "yes", "medial meniscus", "2", "box", "no"],
        answer_type=["choice", "choice", "closed", "open", "severity", "grounding", "closed"],
        options=[OPTIONS, OPTIONS, None, None, None, None, None],
    )
    # Severity rows are severity_reward's: not paid twice.
    assert rewards == [1.0, 0.0, 1.0, 1.0, None, None, 1.0]


@pytest.mark.parametrize(
    "hedge",
    ["A or B", "B or A", "(A) or (B)", "A/B", "A, B", "either A or B", "Both A and B",
     "not A", "The answer is not A", "**A** or **B**"],
)  # fmt: skip
def test_a_hedge_scores_zero_whatever_the_truth(hedge, wrap):
    for truth in ("A", "B"):
        (got,) = accuracy_reward([wrap(reply(hedge))], answer=[truth], answer_type=["choice"],
                                 options=[OPTIONS])  # fmt: skip
        assert got == 0.0, (hedge, truth)


def test_a_cut_off_answer_scores_zero(wrap):
    cut = ["<think>It is torn.</think><answer>B", "<answer>B"]
    for text in cut:
        assert accuracy_reward([wrap(text)], answer=["B"], answer_type=["choice"],
                               options=[OPTIONS]) == [0.0]  # fmt: skip
        assert severity_reward([wrap(text.replace("B", "2"))], severity=[2]) == [0.0]
        assert box_iou_reward("qwen2_vl")([wrap(text.replace("B", format_box(BOX, "qwen2_vl")))],
                                          box=[BOX]) == [0.0]  # fmt: skip
    # The trainer's truncated column: a complete-looking answer cut at max_new_tokens.
    both = [reply("B"), reply("B")]
    kw = {"answer": ["B", "B"], "answer_type": ["choice"] * 2, "options": [OPTIONS] * 2}
    assert accuracy_reward(both, truncated=[False, True], **kw) == [1.0, 0.0]
    assert accuracy_reward(both, **kw) == [1.0, 1.0]


BOX = [0.1, 0.2, 0.5, 0.6]
SHIFTED = [0.3, 0.2, 0.7, 0.6]  # overlap 0.2 x 0.4 = 0.08, union 0.24: IoU 1/3


@pytest.mark.parametrize(
    ("family", "image_size"),
    [("qwen2_vl", None), ("qwen2_5_vl", (400, 200)), ("qwen3_vl", None)],
)
def test_box_iou_reward_per_family(family, image_size, wrap):
    reward = box_iou_reward(family)
    assert reward.__name__ == f"box_iou_reward_{family}"
    pred = format_box(SHIFTED, family, image_size, label="tear")
    exact = format_box(BOX, family, image_size)
    completions = [wrap(reply(pred)), wrap(reply(exact)), wrap(reply("no box")), wrap(reply("B"))]
    sizes = [image_size] * 4
    rewards = reward(completions, box=[BOX, BOX, BOX, None], image_size=sizes)
    assert rewards[0] == pytest.approx(1 / 3, abs=1e-6)
    assert rewards[1] == pytest.approx(1.0, abs=1e-6)
    assert rewards[2:] == [0.0, None]


def test_box_iou_reward_3d_and_shared_image_size(wrap):
    true = [0.25, 0.25, 0.25, 0.75, 0.75, 0.75]
    pred = format_box_3d([0, 0, 0, 0.5, 0.5, 0.5])
    rewards = box_iou_reward("qwen2_5_vl")([wrap(reply(pred))], box=[true])
    assert rewards == [pytest.approx(1 / 15, abs=1e-6)]
    # A 2D reply to a 3D box reads as nothing.
    assert box_iou_reward("qwen2_vl")([wrap(reply("(0,0),(500,500)"))], box=[true]) == [0.0]
    # One (width, height) pair for every row.
    text = reply(format_box(SHIFTED, "qwen2_5_vl", (400, 200)))
    shared = box_iou_reward("qwen2_5_vl")([text, text], box=[BOX, BOX], image_size=[400, 200])
    assert shared == [pytest.approx(1 / 3, abs=1e-6)] * 2


def test_box_iou_reward_errors():
    with pytest.raises(ValueError, match="family"):
        box_iou_reward("llava")
    with pytest.raises(ValueError, match="image_size"):
        box_iou_reward("qwen2_5_vl")([reply('{"bbox_2d": [1, 2, 3, 4]}')], box=[BOX])


def test_severity_reward(wrap):
    completions = [wrap(reply(g)) for g in ("Grade 1", "3", "grade 9", "severe", "2", "2")]
    rewards = severity_reward(
        completions,
        severity=[3, 3, 3, 3, None, 1],
        anatomy=["knee", "knee", "knee", "knee", "knee", "liver"],
        modality=["X-ray", "X-ray", "X-ray", "X-ray", "X-ray", "CT"],
    )
    # Knee X-ray: Kellgren-Lawrence 0-4. Liver CT has no known scale: exact match only.
    assert rewards == [pytest.approx(0.5), 1.0, 0.0, 0.0, None, 0.0]
    # A given max_grade overrides the sample's scale (knee MRI MOAKS would be 0-3).
    given = severity_reward([wrap(reply("1"))], severity=[3], max_grade=8, anatomy=["knee"])
    assert given == [pytest.approx(0.75)]
    moaks = severity_reward([reply("2")], severity=[3], anatomy=["knee"], modality=["MRI"])
    assert moaks == [pytest.approx(2 / 3)]


def test_trl_signature_with_unrelated_columns():
    """TRL calls reward(prompts=..., completions=..., completion_ids=..., **every column)."""
    columns = {
        "answer": ["B", "yes", "box", "2"],
        "answer_type": ["choice", "closed", "grounding", "severity"],
        "options": [OPTIONS, None, None, None],
        "box": [None, None, BOX, None],
        "severity": [None, None, None, 2],
    }
    columns.update(
        id=["a", "b", "c", "d"],
        image=["x.png"] * 4,
        modality=["MRI"] * 4,
        anatomy=["knee"] * 4,
        question=["q"] * 4,
        mask=[None] * 4,
        reasoning=[None] * 4,
        split=["train"] * 4,
        source=["phantom"] * 4,
        meta=[{}] * 4,
        prompts=[[{"role": "user", "content": "q"}]] * 4,
        completion_ids=[[1, 2, 3]] * 4,
        trainer_state=None,
    )
    completions = [
        chat(reply("B")),
        chat(reply("no")),
        chat(reply(format_box(BOX, "qwen3_vl"))),
        chat(reply("2")),
    ]
    expected = {
        "format_reward": [1.0, 1.0, 1.0, 1.0],
        "accuracy_reward": [1.0, 0.0, None, None],
        "severity_reward": [None, None, None, 1.0],
        "box_iou_reward_qwen3_vl": [None, None, pytest.approx(1.0, abs=1e-6), None],
        # One prompt, one group: 2 of 3 judged rows right (easy), every think block the same
        # length, so no length is better than another: 0; the grounding row is not judged.
        "reasoning_length_reward_20": [0.0, 0.0, None, 0.0],
    }
    funcs = [*default_rewards("qwen3_vl"), reasoning_length_reward()]
    assert funcs[:3] == DEFAULT_REWARDS
    for func in funcs:
        assert "completions" in inspect.signature(func).parameters
        rewards = func(completions=completions, **columns)
        assert rewards == expected[func.__name__], func.__name__
        assert all(r is None or isinstance(r, float) for r in rewards)


def test_column_length_mismatch_is_loud():
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(["B", "C"], answer=["B"], answer_type=["choice", "choice"])


def test_a_multi_answer_choice_is_scored_as_a_set(wrap):
    options = {k: f"finding {k}" for k in "ABCDEF"}
    said = ["B, E, F", "F, B and E", "B, E", "B, E, F, A", "B or E or F"]
    got = accuracy_reward([wrap(reply(s)) for s in said], answer=["B,E,F"] * 5,
                          answer_type=["choice"] * 5, options=[options] * 5)  # fmt: skip
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_box_head_iou_reward_reads_the_head_box_column():
    from medvl.train.rewards import box_head_iou_reward

    got = box_head_iou_reward(["a", "b", "c", "d"], box=[BOX, BOX, BOX, None],
                              head_box=[BOX, SHIFTED, None, BOX])  # fmt: skip
    assert got == [pytest.approx(1.0), pytest.approx(1 / 3), 0.0, None]
    with pytest.raises(ValueError, match="head_box"):
        box_head_iou_reward(["a"], box=[BOX])

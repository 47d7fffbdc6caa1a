"""The reasoning length reward calibrated by the group's difficulty (hand-computed values)."""

from __future__ import annotations

import pytest

from medvl.train.reasoning_reward import distinct_words, reasoning_length_reward

OPTIONS = {"A": "Meniscal tear", "B": "No tear"}


def reply(answer: str, words: int, filler: bool = False) -> str:
    think = " ".join(["tear"] * words) if filler else " ".join(f"w{i}" for i in range(words))
    head = f"<think>{think}</think>" if words else ""
    return f"{head}<answer>{answer}</answer>"


def columns(n: int, truth: str = "B") -> dict:
    return {"answer": [truth] * n, "answer_type": ["choice"] * n, "options": [OPTIONS] * n,
            "id": ["q1"] * n, "question": ["Is there a tear?"] * n}  # fmt: skip


def test_easy_group_pays_short_right_answers() -> None:
    reward = reasoning_length_reward(min_words=20)
    # 3 of 4 right: easy. Lengths 10, 20, 30 (right) and 10 (wrong): L_min 10, L_max 30.
    completions = [reply("B", 10), reply("B", 20), reply("B", 30), reply("A", 10)]
    got = reward(completions, **columns(4))
    # lam = 0.5 - (L - 10) / 20: 0.5, 0.0, -0.5; the wrong short one: min(0, 0.5) = 0.
    assert got == [pytest.approx(0.5), pytest.approx(0.0), pytest.approx(-0.5), 0.0]


def test_hard_group_allows_longer_reasoning_but_not_filler() -> None:
    reward = reasoning_length_reward(min_words=20)
    # 1 of 4 right: hard. Paid 0.5 * min(1, L / 20), right or wrong; filler counts once.
    completions = [reply("A", 10), reply("A", 40), reply("B", 5), reply("A", 40, filler=True)]
    assert reward(completions, **columns(4)) == [0.25, 0.5, 0.125, pytest.approx(0.5 / 20)]


def test_filler_does_not_earn_in_an_easy_group_either() -> None:
    reward = reasoning_length_reward(min_words=20)
    padded = [reply("B", 10), reply("B", 10, filler=True)]  # the filler is 1 distinct word
    got = reward(padded, **columns(2))
    # Lengths 10 and 1: the padded one is the short one, but all its words are one: lam 0.5 for
    # it and -0.5 for the real reasoning. Filler is shorter, not longer: it never earns length.
    assert distinct_words("tear tear tear. Tear!") == 1
    assert got == [pytest.approx(-0.5), pytest.approx(0.5)]


def test_groups_are_read_from_the_rows_and_unjudged_rows_are_none() -> None:
    reward = reasoning_length_reward(min_words=4)
    completions = [reply("B", 2), reply("B", 4), reply("A", 2), reply("A", 8), "<answer>x</answer>"]
    cols = {
        "answer": ["B", "B", "B", "B", "box"], "options": [OPTIONS] * 5,
        "answer_type": ["choice"] * 4 + ["grounding"],
        "id": ["easy", "easy", "hard", "hard", "g"], "question": ["q"] * 5,
    }  # fmt: skip
    # "easy": both right, lengths 2 and 4 -> 0.5 and -0.5. "hard": both wrong -> 0.25, 0.5.
    assert reward(completions, **cols) == [0.5, -0.5, 0.25, 0.5, None]
    with pytest.raises(ValueError):
        reasoning_length_reward(min_words=0)

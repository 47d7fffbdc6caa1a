"""medvl.model.replies.parse_response: the think/answer shape, read leniently, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvl.model.replies import ParsedResponse, parse_response

CASES = {
    "well formed": ("<think>\nlook\n</think>\n<answer>B</answer>", ("look", "B", True)),
    "spaces around": ("  <think>x</think>  <answer> yes </answer>\n", ("x", "yes", True)),
    "answer only": ("<answer>B</answer>", (None, "B", False)),
    "bare": ("  B  ", (None, "B", False)),
    "no answer tag": ("<think>x</think> The answer is B.", ("x", "The answer is B.", False)),
    "unclosed think": ("<think>looking at it <answer>A</answer>", ("looking at it", "A", False)),
    "unclosed think, no answer": ("<think>looking at it", ("looking at it", None, False)),
    "unclosed answer": ("<think>x</think><answer>menisc", ("x", "menisc", False)),
    "text before": ("Sure. <think>x</think><answer>B</answer>", ("x", "B", False)),
    "text after": ("<think>x</think><answer>B</answer> Hope this helps", ("x", "B", False)),
    "two answers": ("<think>x</think><answer>A</answer><answer>B</answer>", ("x", "A", False)),
    "nested answer": ("<think>x</think><answer><answer>B</answer></answer>", ("x", "B", False)),
    "nested think": ("<think><think>x</think></think><answer>B</answer>", ("x", "B", False)),
    "empty think": ("<think> </think><answer>B</answer>", (None, "B", False)),
    "empty answer": ("<think>x</think><answer> </answer>", ("x", None, False)),
    "empty": ("", (None, None, False)),
    "tags only": ("</answer></think>", (None, None, False)),
    "close without open": ("x</think><answer>B</answer>", ("x", "B", False)),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_parse_response_reads_what_it_can(text, expected):
    assert parse_response(text, reasoning=True) == ParsedResponse(*expected)


def test_parse_response_modes():
    assert parse_response("<answer>B</answer>", reasoning=False).well_formed
    assert parse_response("<think>\n\n</think>\n\n<answer>B</answer>", reasoning=False).well_formed
    assert not parse_response("<think>x</think><answer>B</answer>", reasoning=False).well_formed
    assert parse_response("<answer>B</answer>").well_formed  # reasoning=None: either shape
    assert parse_response("<think>x</think><answer>B</answer>").well_formed
    prefilled = parse_response("\nlook\n</think>\n<answer>B</answer>", think_prefilled=True)
    assert prefilled == ParsedResponse("look", "B", True)
    assert parse_response(None) == parse_response(3) == ParsedResponse(None, None, False)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100) | st.text(alphabet="<>/thinkanswer x\n", max_size=80), st.booleans())
def test_parse_response_never_raises(text, prefilled):
    for mode in (True, False, None):
        parsed = parse_response(text, reasoning=mode, think_prefilled=prefilled)
        assert parsed.answer is None or ("<answer>" not in parsed.answer and parsed.answer.strip())

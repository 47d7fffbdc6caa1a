"""medvl.model.heads.tokens: hidden states at grounding tokens, on real tokenized input."""

from __future__ import annotations

import torch
from heads_helpers import HIDDEN

from medvl.model import load_vlm
from medvl.model.heads import (
    BoxHead,
    gather_token_states,
)

# --- grounding-token states --------------------------------------------------------------------


def test_gather_token_states_on_real_tokenized_input(tiny_model_path):
    # A fresh copy of the tiny model and tokenizer: the token is added in memory only.
    model, processor = load_vlm(tiny_model_path("qwen2_5_vl", "tiny"))
    tokenizer = processor.tokenizer
    assert tokenizer.add_tokens(["<|box|>"], special_tokens=True) == 1
    model.resize_token_embeddings(len(tokenizer))
    box_id = tokenizer.convert_tokens_to_ids("<|box|>")

    texts = ["the tear <|box|> is here", "two: <|box|>and<|box|> end of a longer line"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    states, rows = gather_token_states(hidden, batch["input_ids"], box_id)

    # Positions found independently, from the token strings: the new token is one whole token.
    expected = [
        (b, t)
        for b in range(len(texts))
        for t, token in enumerate(tokenizer.convert_ids_to_tokens(batch["input_ids"][b]))
        if token == "<|box|>"
    ]
    assert len(expected) == 3
    assert rows.tolist() == [b for b, _ in expected] == [0, 1, 1]
    for state, (b, t) in zip(states, expected, strict=True):
        torch.testing.assert_close(state, hidden[b, t], rtol=0, atol=0)
    assert states.shape == (3, HIDDEN)
    assert BoxHead(HIDDEN)(states).shape == (3, 4)

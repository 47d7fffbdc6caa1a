"""Grounding tokens (``<|box|>``, ``<|seg|>``): adding them to a model's tokenizer and embeddings,
and picking out the language model's hidden states at them.

* :func:`add_grounding_tokens` (new tokens, embedding rows set to the mean embedding) and
  :func:`restore_grounding_tokens` (the same rows again under a LoRA adapter).
* :func:`gather_token_states`: the hidden state at each grounding token, for the heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def gather_token_states(
    hidden: torch.Tensor, input_ids: torch.Tensor, token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden state at every occurrence of ``token_id``, and the batch row it came from.

    Occurrences come in reading order: row by row, left to right within a row, so the k-th
    ``<|box|>`` of a row pairs with the k-th target box of that sample.

    Args:
        hidden: ``(B, T, D)`` last-layer hidden states, e.g. ``outputs.hidden_states[-1]`` of a
            forward with ``output_hidden_states=True``. In a causal LM the state at the token's
            own position is the one computed *with* the token as input.
        input_ids: ``(B, T)`` the ids that produced ``hidden`` (padding anywhere is fine).
        token_id: The grounding token's id (``tokenizer.convert_tokens_to_ids("<|box|>")``).

    Returns:
        ``(states, rows)``: ``(N, D)`` hidden states and ``(N,)`` long batch-row indices.
    """
    if hidden.ndim != 3 or input_ids.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden (B, T, D) and input_ids (B, T), got {tuple(hidden.shape)} and "
            f"{tuple(input_ids.shape)}"
        )
    rows, cols = (input_ids == token_id).nonzero(as_tuple=True)  # row-major order
    return hidden[rows, cols], rows


def token_ids(processor: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens the tokenizer must already hold."""
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks grounding tokens {list(tokens)}")
    return list(ids)


def _fit_embeddings(model: nn.Module, processor: Any) -> None:
    """Grow the embeddings only if the tokenizer outgrew them (Qwen-VL has spare rows)."""
    if len(processor.tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)


@torch.no_grad()
def _init_token_rows(model: nn.Module, ids: Sequence[int]) -> None:
    """Set new tokens' input (and untied output) rows to the mean of the older tokens' rows.

    Deterministic, unlike transformers' ``mean_resizing`` (which samples), so a LoRA checkpoint
    can rebuild the exact base rows its trainable-token deltas were learnt on.
    """
    first = min(ids)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        weight[list(ids)] = weight[:first].float().mean(0).to(weight.dtype)


def add_grounding_tokens(
    model: nn.Module, processor: Any, tokens: Sequence[str]
) -> tuple[list[int], bool]:
    """Add ``<|box|>`` / ``<|seg|>`` to the tokenizer (as special tokens) and fit the model.

    Returns:
        The tokens' ids, and whether they were new (then their rows were mean-initialised).
    """
    before = len(processor.tokenizer)
    processor.tokenizer.add_tokens(list(tokens), special_tokens=True)
    _fit_embeddings(model, processor)
    ids = token_ids(processor, tokens)
    added = len(processor.tokenizer) > before
    if added:
        _init_token_rows(model, ids)
    return ids, added


def restore_grounding_tokens(
    model: nn.Module, processor: Any, tokens: Sequence[str], init_rows: bool
) -> list[int]:
    """Prepare a base model for a LoRA adapter trained with grounding tokens: the tokenizer
    (from the checkpoint) has them; the base needs the rows (and their mean start) again."""
    _fit_embeddings(model, processor)
    ids = token_ids(processor, tokens)
    if init_rows:
        _init_token_rows(model, ids)
    return ids

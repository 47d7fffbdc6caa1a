"""Pick out the language model's hidden states at grounding tokens (``<|box|>``, ``<|seg|>``)."""

from __future__ import annotations

import torch


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

"""Per-token log-probs of a GRPO group: G completions that share one prompt and one scan.

Two ways to compute the same numbers (see "GRPO without waste" in ``shared/DESIGN.md``):

* :func:`completion_logprobs`, the reference: each completion is appended to the prompt and the
  whole sequence (scan included) runs through the model, G times over in one batch. This is
  what TRL and the other peers do.
* :func:`shared_prefix_logprobs`, the shared path: one forward over the prompt (batch 1, so
  the scan goes through the vision encoder once) with ``use_cache=True``; the G completions
  then run in one forward on top of its KV cache, packed into one row of G x L tokens whose
  4D mask lets each see the prompt and its own earlier tokens (so the prompt's keys and values
  are not copied G times), with explicit M-RoPE ``position_ids`` (``arange(P, P + L) +
  rope_deltas`` for each completion).

Both keep the autograd graph when called with gradients enabled: in the shared path the cache
holds the prefix's keys and values as graph tensors, so a loss on the completions
backpropagates into the prompt and vision parts exactly as in the reference.

``prompt_inputs`` is what :func:`medvl.model.generate.prepare_inputs` returns for one prompt
(batch 1): ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` and the vision tensors.
``completion_ids`` is ``(G, L)``, right-padded; ``completion_mask`` marks the real tokens.
Returned log-probs are ``(G, L)`` with 0 where the mask is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from medvl.model.loading import unwrap

# Inputs with a batch dimension first (one row per sequence); every other tensor in the
# processor's output (pixel_values, *_grid_thw, second_per_grid_ts) is a flat list over the
# images/videos of the batch.
_PER_ROW = ("input_ids", "attention_mask", "mm_token_type_ids")


def _check(prompt_inputs: Mapping[str, Any], completion_ids: torch.Tensor) -> None:
    if prompt_inputs["input_ids"].shape[0] != 1:
        raise ValueError("prompt_inputs must hold one prompt (batch 1)")
    if completion_ids.ndim != 2 or completion_ids.shape[1] == 0:
        raise ValueError(f"completion_ids must be (G, L) with L >= 1, got {completion_ids.shape}")
    has_vision = any(k in prompt_inputs for k in ("image_grid_thw", "video_grid_thw"))
    if has_vision and "mm_token_type_ids" not in prompt_inputs:
        # Without it Qwen-VL silently falls back to 1D positions (DESIGN trap 1).
        raise ValueError("prompt_inputs with vision need mm_token_type_ids (from the processor)")


def _mask(completion_ids: torch.Tensor, completion_mask: torch.Tensor | None) -> torch.Tensor:
    if completion_mask is None:
        return torch.ones_like(completion_ids)
    if completion_mask.shape != completion_ids.shape:
        raise ValueError("completion_mask must have the shape of completion_ids")
    return completion_mask.to(completion_ids.device, torch.long)


def _token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    entropy: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """log_softmax(logits / temperature)[..., token] in fp32; logits (..., V), tokens (...).
    With ``entropy`` given, the distribution's entropy (no grad) is appended to it."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    if entropy is not None:
        with torch.no_grad():
            entropy.append(-(logp.exp() * logp).sum(-1))
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _vlm(model: nn.Module) -> nn.Module:
    """The Qwen-VL ``...ForConditionalGeneration`` under peft / other wrappers."""
    inner = unwrap(model)
    while not hasattr(getattr(inner, "model", None), "rope_deltas") and hasattr(inner, "module"):
        inner = inner.module  # DDP / accelerate wrappers
    if not hasattr(getattr(inner, "model", None), "rope_deltas"):
        raise TypeError(f"{type(model).__name__} is not a Qwen-VL model (no model.rope_deltas)")
    return inner


def completion_logprobs(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    entropy: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Reference per-token log-probs: G full forwards (prompt + scan + completion), batched.

    Args:
        model: A Qwen-VL model (optionally peft-wrapped).
        prompt_inputs: The processor's output for one prompt (batch 1), ``mm_token_type_ids``
            included.
        completion_ids: ``(G, L)`` completion tokens, right-padded.
        completion_mask: ``(G, L)``, 1 on real tokens; ``None`` means all real.
        temperature: The logits are divided by it (the sampling temperature: the log-probs
            are those of the distribution the completions were drawn from).
        entropy: A list that receives the ``(G, L)`` entropy of each token's distribution
            (no grad, 0 on padding), for logging.

    Returns:
        ``(G, L)`` log-probs of the completion tokens (0 on padding).
    """
    _check(prompt_inputs, completion_ids)
    mask = _mask(completion_ids, completion_mask)
    n_groups, length = completion_ids.shape
    prompt_len = prompt_inputs["input_ids"].shape[1]
    inputs: dict[str, Any] = {}
    for key, value in prompt_inputs.items():
        if not isinstance(value, torch.Tensor):
            inputs[key] = value
        elif key in _PER_ROW:
            inputs[key] = value.repeat(n_groups, 1)
        else:
            inputs[key] = torch.cat([value] * n_groups, dim=0)
    device = completion_ids.device
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    prompt_mask = inputs.get("attention_mask", torch.ones(n_groups, prompt_len, device=device))
    inputs["attention_mask"] = torch.cat([prompt_mask.to(mask.dtype), mask], dim=1)
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat(
            [types, torch.zeros(n_groups, length, dtype=types.dtype, device=device)], dim=1
        )
    # Logits at positions P-1 .. P+L-2 predict the L completion tokens.
    logits = model(**inputs, use_cache=False, logits_to_keep=length + 1).logits[:, :-1]
    found: list[torch.Tensor] = []
    logp = _token_logprobs(logits, completion_ids, temperature, found) * mask
    if entropy is not None:
        entropy.append(found[0] * mask)
    return logp


@dataclass
class Prefix:
    """One forward over a prompt and its scan (batch 1), to be continued by G sequences.

    Attributes:
        logits: ``(1, V)`` the logits at the prompt's last position (they predict the first
            completion token).
        cache: The prompt's KV cache (a graph tensor per layer when made with grad).
        rope_deltas: The prompt's M-RoPE offset of the text after its scan (None: text only).
        attention_mask: ``(1, P)`` the prompt's attention mask.
    """

    logits: torch.Tensor
    cache: Any
    rope_deltas: torch.Tensor | None
    attention_mask: torch.Tensor

    @property
    def length(self) -> int:
        """P, the prompt's length in tokens."""
        return self.attention_mask.shape[1]

    def layer_states(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cached ``(keys, values)``, ``(1, heads, P, head_dim)``."""
        return [(layer.keys, layer.values) for layer in self.cache.layers]


def prefill(model: nn.Module, prompt_inputs: Mapping[str, Any]) -> Prefix:
    """The forward over one prompt (batch 1, ``use_cache=True``) that G sequences continue.

    With grad enabled the cache keeps the graph, so a loss on the continuations
    backpropagates into the prompt and its scan.

    Raises:
        RuntimeError: The model returned no cache (a checkpointed forward in training mode).
    """
    input_ids = prompt_inputs["input_ids"]
    inner = _vlm(model).model
    # The forward (cache length 0) sets rope_deltas from the prompt's M-RoPE; a text-only
    # prompt leaves it alone, so clear a stale value from an earlier batch first.
    inner.rope_deltas = None
    out = model(**prompt_inputs, use_cache=True, logits_to_keep=1)
    if out.cache is None:
        raise RuntimeError(
            "the prefix forward returned no cache (was use_cache turned off, e.g. by "
            "gradient checkpointing?); use completion_logprobs there"
        )
    mask = prompt_inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    return Prefix(out.logits[:, -1], out.cache, inner.rope_deltas, mask.to(input_ids.device))


def shared_prefix_logprobs(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    entropy: list[torch.Tensor] | None = None,
    prefix: Prefix | None = None,
) -> torch.Tensor:
    """Per-token log-probs with the scan encoded once and the prompt's KV cache shared.

    One prefix forward (batch 1, ``use_cache=True``) over the prompt; the first completion
    token's log-prob comes from its last logits. The completions (all tokens but the last,
    which predicts nothing) run in one forward on the prompt's cache, packed into one row with
    ``position_ids = arange(P, P + L - 1) + rope_deltas`` for each (see `_on_shared_prefix`).
    Equal to :func:`completion_logprobs` up to float rounding, gradients included.

    Args:
        prefix: This prompt's :func:`prefill` under the same weights (GRPO's rollout made it
            with grad), used instead of a new one and left as it is.
        Others as :func:`completion_logprobs`.

    Returns:
        As :func:`completion_logprobs`.
    """
    _check(prompt_inputs, completion_ids)
    mask = _mask(completion_ids, completion_mask)
    n_groups, length = completion_ids.shape
    # The last completion token predicts nothing: the tokens before it run on the prefix.
    prefix, out = _on_shared_prefix(
        model, prompt_inputs, completion_ids[:, :-1], mask[:, :-1], prefix=prefix
    )
    found: list[torch.Tensor] = []
    first = _token_logprobs(
        prefix.logits.expand(n_groups, -1), completion_ids[:, 0], temperature, found
    )
    if out is None:
        if entropy is not None:
            entropy.append(found[0][:, None] * mask)
        return first[:, None] * mask
    rest = _token_logprobs(out, completion_ids[:, 1:], temperature, found)
    if entropy is not None:
        entropy.append(torch.cat([found[0][:, None], found[1]], dim=1) * mask)
    return torch.cat([first[:, None], rest], dim=1) * mask


def shared_prefix_hidden_states(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    token_ids: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    prefix: Prefix | None = None,
) -> torch.Tensor:
    """The last layer's hidden states at each of G token sequences that follow one prompt,
    ``(G, L, D)``, with the prompt and its scan through the model once (what the grounding
    heads read at their tokens); ``prefix`` as in :func:`shared_prefix_logprobs`."""
    _check(prompt_inputs, token_ids)
    mask = _mask(token_ids, token_mask)
    return _on_shared_prefix(model, prompt_inputs, token_ids, mask, prefix, hidden=True)[1]


def _on_shared_prefix(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    tokens: torch.Tensor,
    tokens_mask: torch.Tensor,
    prefix: Prefix | None = None,
    hidden: bool = False,
) -> tuple[Prefix, torch.Tensor | None]:
    """The prompt's :func:`prefill` (or ``prefix``, left as it is: the rows run on a new cache
    that starts from its keys and values) and the G rows of ``tokens`` run on top at
    ``position_ids = arange(P, P + T) + rope_deltas``.

    With SDPA or eager attention the G rows run as one packed row of G x T tokens under a 4D
    mask (each token sees the prompt and its own row's earlier real tokens), so the prompt's
    keys and values are never copied G times (nor, in the backward, summed back from G
    copies). Other attention implementations (flash attention takes no 4D mask) get the cache
    repeated to G rows and a 2D mask.

    Returns:
        The prefix and ``(G, T, V)`` logits, or with ``hidden`` the last layer's ``(G, T, D)``
        hidden states; None when ``tokens`` is empty.
    """
    n_groups, length = tokens.shape
    device = tokens.device
    if prefix is None:
        prefix = prefill(model, prompt_inputs)
    if length == 0:
        return prefix, None
    position_ids = _positions(prefix.length, length, n_groups, prefix.rope_deltas, device)
    row = torch.arange(n_groups * length, device=device) // length
    col = torch.arange(n_groups * length, device=device) % length
    own = (row[:, None] == row[None, :]) & (col[None, :] <= col[:, None])
    own &= tokens_mask.reshape(1, -1).to(device).bool()
    seen = prefix.attention_mask.to(device).bool().expand(n_groups * length, -1)
    mask = ready_mask(model, torch.cat([seen, own], dim=1)[None, None])
    rows = 1
    if mask is not None:
        tokens, position_ids = tokens.reshape(1, -1), position_ids.reshape(3, 1, -1)
    else:
        rows = n_groups
        mask = torch.cat(
            [prefix.attention_mask.to(device, tokens_mask.dtype).expand(n_groups, -1), tokens_mask],
            dim=1,
        )
    cache = DynamicCache(config=_vlm(model).config)
    for index, (keys, values) in enumerate(prefix.layer_states()):
        if rows > 1:
            keys, values = keys.repeat_interleave(rows, 0), values.repeat_interleave(rows, 0)
        cache.update(keys, values, index)  # copies: the prefix's own tensors stay as they are
    out = model(
        input_ids=tokens, attention_mask=mask, position_ids=position_ids, cache=cache,
        use_cache=True, output_hidden_states=hidden,
    )  # fmt: skip
    values = out.hidden_states[-1] if hidden else out.logits
    return prefix, values.reshape(n_groups, length, -1)


def ready_mask(model: nn.Module, allowed: torch.Tensor) -> torch.Tensor | None:
    """A boolean 4D mask ``(B, 1, Q, K)`` (True: may attend) in the form the model's attention
    takes a ready-made one: as is for SDPA, additive (0 or the float32 minimum) for eager;
    None for the others (flash attention takes no 4D mask)."""
    implementation = _vlm(model).config.get_text_config()._attn_implementation
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        blocked = torch.finfo(torch.float32).min
        return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, blocked)
    return None


def _positions(
    prompt_len: int,
    length: int,
    n_groups: int,
    rope_deltas: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """M-RoPE positions of ``length`` text tokens after a prompt of ``prompt_len``: (3, G, L).

    Text tokens after the vision part sit at ``index + rope_deltas`` on all three axes
    (temporal, height, width). Three rows, not four: Qwen3-VL's language model also takes a
    leading text row, but only to build the causal mask, which the attention mask and the
    cache already give; all three families accept three rows.
    """
    steps = torch.arange(prompt_len, prompt_len + length, device=device)
    if rope_deltas is None:  # text-only prompt: plain positions
        rope_deltas = torch.zeros(1, 1, dtype=torch.long, device=device)
    delta = rope_deltas.to(device).reshape(-1, 1)  # (1, 1) after a batch-1 prefix forward
    return (steps.view(1, -1) + delta).view(1, -1, length).expand(3, n_groups, length)

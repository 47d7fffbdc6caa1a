"""GRPO rollouts from one prefill: G completions of one prompt, with the prompt and its scan
through the model once.

``generate(num_return_sequences=G)`` (what TRL does) copies the prompt G times: the vision
tower encodes the scan G times and the prompt is prefilled G times. :func:`sample_group` runs
one prefix forward (batch 1) with ``use_cache=True``, copies its KV cache to G rows of a
static cache and decodes the G samples on it, token by token, with explicit
M-RoPE positions after the prompt (as `medvl.train.logprobs.shared_prefix_logprobs` does for
the log-probs). Sampling uses transformers' own logits warpers (temperature, top-k, top-p, in
``generate``'s order) and ``torch.multinomial`` on the global RNG, so with a fixed seed it
draws what ``generate`` draws; greedy decoding gives ``generate``'s tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    LogitsProcessorList,
    StaticCache,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from medvl.train.logprobs import (
    Prefix,
    _check,
    _positions,
    _vlm,
    prefill,
    ready_mask,
    shared_prefix_hidden_states,
)

__all__ = [
    "BoxProbes",
    "box_probes",
    "head_boxes",
    "read_head_boxes",
    "sampled_head_boxes",
    "sample_group",
    "sampling_warpers",
]


def sampling_warpers(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Any:
    """The logits warpers ``generate`` applies for these settings, in its order."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k and top_k > 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


def sample_group(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    num_samples: int,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    prefix: Prefix | None = None,
) -> torch.Tensor:
    """G completions of one prompt decoded from one shared prefill.

    The prompt's keys and values are copied once into a static cache of G rows and
    ``P + max_new_tokens`` positions, which each decoding step fills in place (a growing cache
    would copy all of it at every step), under a causal mask made once; decoding runs in
    inference mode (no autograd bookkeeping: the returned ids are a plain tensor).

    Args:
        model: A Qwen-VL model (optionally peft-wrapped), in eval mode.
        prompt_inputs: The processor's output for one prompt (batch 1), with
            ``mm_token_type_ids`` when it holds a scan.
        num_samples: G.
        max_new_tokens: Most tokens per completion.
        stop_ids: Token ids that end a completion (end-of-turn, end-of-text).
        pad_id: Written after a completion's stop token.
        do_sample: Sample (True) or take the most likely token (False: the G rows are equal).
        temperature: Sampling temperature.
        top_k: Keep the k most likely tokens (0: off).
        top_p: Nucleus sampling (1.0: off).
        prefix: This prompt's `medvl.train.logprobs.prefill` under the same weights, used
            instead of a new one and left as it is (GRPO makes it with grad, for the loss).

    Returns:
        ``(G, L)`` token ids, ``L <= max_new_tokens``: each row up to and including its first
        stop token, then ``pad_id``; decoding ends when every row has stopped.
    """
    _check(prompt_inputs, torch.zeros(1, 1, dtype=torch.long))
    settings = (num_samples, max_new_tokens, stop_ids, pad_id, do_sample, temperature, top_k,
                top_p)  # fmt: skip
    with torch.inference_mode():
        ids = _decode(model, prompt_inputs, prefix, *settings)
    return ids.clone()  # a normal tensor: later forwards with grad may save it


def _decode(
    model: nn.Module,
    prompt_inputs: Mapping[str, Any],
    prefix: Prefix | None,
    num_samples: int,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
) -> torch.Tensor:
    """`sample_group`'s loop (in inference mode)."""
    if prefix is None:
        prefix = prefill(model, prompt_inputs)
    device, prompt_len = prompt_inputs["input_ids"].device, prefix.length
    total = prompt_len + max_new_tokens
    cache = StaticCache(config=_vlm(model).config, max_cache_len=total)
    for index, (keys, values) in enumerate(prefix.layer_states()):
        shape = (num_samples, -1, -1, -1)
        cache.update(keys.detach().expand(shape), values.detach().expand(shape), index)
    # Row s: what the token at position P + s attends to (the prompt's real tokens and the
    # completion up to itself), made once as the 4D mask the attention takes as is; a 2D mask
    # of the full length where it takes none (the causal mask hides what is not written yet).
    positions = torch.arange(total, device=device)
    allowed = positions[None, :] <= positions[prompt_len:, None]
    allowed[:, :prompt_len] &= prefix.attention_mask.to(device).bool()
    masks = ready_mask(model, allowed[:, None, None, :])
    if masks is None:
        masks = allowed[-1:].long().expand(max_new_tokens, -1)  # one full-length 2D row a step
    # The warpers in use (temperature, top-k, top-p) read only the scores, not the history.
    warpers = sampling_warpers(temperature, top_k, top_p) if do_sample else None
    stops = torch.tensor(list(stop_ids), device=device)
    logits = prefix.logits.detach().float().expand(num_samples, -1)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if do_sample:
            scores = warpers(None, logits)
            next_ids = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]
        else:
            next_ids = logits.argmax(dim=-1)
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        tokens.append(next_ids)
        done = done | torch.isin(next_ids, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=masks[step : step + 1].expand(num_samples, *masks.shape[1:]),
            position_ids=_positions(prompt_len + step, 1, num_samples, prefix.rope_deltas,
                                    device),
            cache=cache,
            use_cache=True,
        )  # fmt: skip
        logits = out.logits[:, -1].float()
    return torch.stack(tokens, dim=1)


@dataclass
class BoxProbes:
    """What the box head reads for G completions of one prompt.

    Attributes:
        tokens: ``(G, W)`` each completion's reply up to its first stop, with ``<|box|>``
            appended for a grounding question whose reply has none; right-padded.
        mask: ``(G, W)``, 1 on real tokens.
        head: The box head's name (``box2d`` / ``box3d``).
        box_id: The ``<|box|>`` token id.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    head: str
    box_id: int


def box_probes(vlm: Any, ids: torch.Tensor, stops: torch.Tensor, context: Any) -> BoxProbes | None:
    """The tokens the box head reads for each of G completions (as `MedVLM.answer` does at
    inference); None when the model has no box head for this scan's dimension or no
    completion holds a ``<|box|>`` (a closed question's replies: the head is not run).

    Args:
        vlm: The `MedVLM`.
        ids: ``(G, L)`` sampled tokens.
        stops: ``(G, L)``, True at end-of-turn / padding tokens.
        context: The question's `AnswerContext` (``scan_ndim``, ``answer_type``).
    """
    name = f"box{context.scan_ndim}d"
    if name not in vlm.heads:
        return None
    box_id, grounding = vlm._box_id, context.answer_type == "grounding"
    probes = []
    for row, stop in zip(ids, stops, strict=True):
        reply = row[: int(stop.nonzero()[0]) if stop.any() else row.shape[0]]
        if grounding and not bool((reply == box_id).any()):
            reply = torch.cat([reply, reply.new_tensor([box_id])])
        probes.append(reply)
    if not any(bool((p == box_id).any()) for p in probes):  # nothing for the head to read
        return None
    width = max(len(p) for p in probes)
    tokens = ids.new_full((len(probes), width), vlm.tokenizer.pad_token_id)
    mask = torch.zeros_like(tokens)
    for i, probe in enumerate(probes):
        tokens[i, : len(probe)], mask[i, : len(probe)] = probe, 1
    return BoxProbes(tokens, mask, name, box_id)


def head_boxes(
    vlm: Any, prompt_inputs: Mapping[str, Any], probes: BoxProbes, prefix: Prefix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box head's boxes at each probe's first ``<|box|>`` token, the prompt and its scan
    run once for the group (`medvl.train.logprobs.shared_prefix_hidden_states`).

    Differentiable when grad is on: GRPO's policy pass trains the head through it
    (`medvl.train.grpo_config.GRPOConfig.box_head_std`). ``prefix``: the prompt's
    `medvl.train.logprobs.prefill` under the same weights, used instead of a new one.

    Returns:
        ``(G, 2 * dim)`` normalised boxes (zeros where a probe has no ``<|box|>``) and ``(G,)``
        True where it has one.
    """
    hidden = shared_prefix_hidden_states(
        vlm.model, prompt_inputs, probes.tokens, probes.mask, prefix=prefix
    )
    head = vlm.heads[probes.head]
    hits = (probes.tokens == probes.box_id) & probes.mask.bool()
    present = hits.any(dim=1)
    first = hits.long().argmax(dim=1)  # the first hit's index (0 where none: masked below)
    states = hidden[torch.arange(len(first), device=hidden.device), first.to(hidden.device)]
    boxes = head(states.to(next(head.parameters()).device))
    return boxes * present.to(boxes.device, boxes.dtype)[:, None], present.cpu()


def sampled_head_boxes(
    vlm: Any, prompt_inputs: Mapping[str, Any], probes: BoxProbes, prefix: Prefix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`head_boxes` as the rollout reads them: in eval mode (no dropout, as the completions
    were sampled), without grad; the model's mode is restored after."""
    was_training = vlm.training
    vlm.eval()
    try:
        with torch.no_grad():
            return head_boxes(vlm, prompt_inputs, probes, prefix)
    finally:
        vlm.train(was_training)


def read_head_boxes(
    vlm: Any,
    prompt_inputs: Mapping[str, Any],
    ids: torch.Tensor,
    stops: torch.Tensor,
    context: Any,
    prefix: Prefix | None = None,
) -> list[list[float] | None]:
    """The box head's box for each of G completions, in medvl's normalised coordinates.

    Read at each completion's first ``<|box|>`` token (appended after the reply for a
    grounding question, as `MedVLM.answer` does), with the prompt and scan run once for the
    group, in eval mode, without grad (`box_probes`, `head_boxes`).

    Args:
        vlm: The `MedVLM`.
        prompt_inputs: The prompt's model inputs (batch 1).
        ids: ``(G, L)`` sampled tokens.
        stops: ``(G, L)``, True at end-of-turn / padding tokens.
        context: The question's `AnswerContext` (``scan_ndim``, ``answer_type``).
        prefix: The prompt's `medvl.train.logprobs.prefill`, reused (else one is made).

    Returns:
        One ``[x1, y1, x2, y2]`` / ``[x1, y1, z1, x2, y2, z2]`` per completion; None for a
        completion without the token, or for all when the model has no box head of that kind.
    """
    probes = box_probes(vlm, ids, stops, context)
    if probes is None:
        return [None] * ids.shape[0]
    boxes, present = sampled_head_boxes(vlm, prompt_inputs, probes, prefix)
    return [b if p else None for b, p in zip(boxes.float().cpu().tolist(), present.tolist(),
                                             strict=True)]  # fmt: skip

"""The GRPO objective, TRL's loss family: advantages from a group's rewards
(`group_advantages`), the clipped surrogate with the k3 KL estimator per token (`grpo_loss`),
and the reduction of those tokens to the batch's loss (`reduce_loss`), plus the group of one
prompt (`Rollout`) and reward functions from config names (`build_rewards`).

Notation, for one group of G completions of one prompt: ``r_i`` the total reward of
completion i, ``A_i`` its advantage, ``m_it`` 1 on its real tokens, ``logp_it`` the policy's
log-prob of token t (logits divided by the sampling temperature, as in TRL), ``old_it`` the
log-prob under the weights that sampled it, ``ref_it`` under the reference model. The trainer
loop lives in `medvl.train.grpo`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from medvl.train import rewards as R
from medvl.train.reasoning_reward import reasoning_length_reward

__all__ = [
    "LOSS_TYPES",
    "STD_EPS",
    "Rollout",
    "TokenLoss",
    "build_rewards",
    "entropy_shaped_advantages",
    "group_advantages",
    "grpo_loss",
    "reduce_loss",
]

STD_EPS = 1e-4  # added to the reward std: a group of equal rewards gets advantages 0
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
ScaleRewards = Literal["group", "batch", "none"]


def build_rewards(names: Sequence[str], family: str) -> list[R.RewardFunc]:
    """Reward functions for config names (``format``, ``accuracy``, ``box_iou``, ``box_head``,
    ``severity``, ``reasoning_length``); ``box_iou`` reads boxes the way ``family`` writes
    them, ``box_head`` takes the box head's prediction."""
    table: dict[str, Callable[[], R.RewardFunc]] = {
        "format": lambda: R.format_reward,
        "accuracy": lambda: R.accuracy_reward,
        "box_iou": lambda: R.box_iou_reward(family),
        "box_head": lambda: R.box_head_iou_reward,
        "severity": lambda: R.severity_reward,
        "reasoning_length": reasoning_length_reward,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; valid: {', '.join(table)}")
    return [table[n]() for n in names]


def group_advantages(rewards: torch.Tensor, scale_rewards: ScaleRewards = "group") -> torch.Tensor:
    """Advantages of B groups of G rewards, ``(B, G)`` -> ``(B, G)``.

    ``A_i = r_i - mean_group(r)``, then divided by ``std + 1e-4`` where ``std`` is the
    group's (``"group"``, DeepSeekMath), the whole batch's (``"batch"``, as TRL: a group
    with little spread keeps small advantages) or not at all (``"none"``, Dr. GRPO: no
    difficulty bias). Standard deviations are unbiased (``torch.std``), as TRL's.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (groups, G >= 2), got {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        return centred / (rewards.std(dim=1, keepdim=True) + STD_EPS)
    if scale_rewards == "batch":
        return centred / (rewards.std() + STD_EPS)
    if scale_rewards == "none":
        return centred
    raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")


def entropy_shaped_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Uncertainty-aware advantages of one group, in the spirit of OphthaReason's UADT (whose
    code is unpublished; this is medvl's formula)::

        H_i  = sum_t m_it H_it / max(1, sum_t m_it)      (completion i's mean token entropy)
        z_i  = (H_i - mean(H)) / (std(H) + 1e-4)         (within the group)
        A'_i = A_i * (1 + alpha * sign(A_i) * tanh(z_i))

    A right answer reached with more uncertainty than the group's is pushed up more (a
    hard-won success is worth learning), a confident wrong answer is pushed down more than a
    hesitant one; signs never flip (``0 <= alpha < 1``) and a zero advantage stays zero.

    Args:
        advantages: ``(G,)``.
        entropy: ``(G, L)`` token entropies (no grad).
        mask: ``(G, L)``.
        alpha: Strength, in [0, 1).
    """
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    mask = mask.to(entropy.dtype)
    mean_entropy = (entropy * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    z = (mean_entropy - mean_entropy.mean()) / (mean_entropy.std() + STD_EPS)
    adv = advantages.to(entropy.dtype)
    return adv * (1 + alpha * torch.sign(adv) * torch.tanh(z))


@dataclass
class TokenLoss:
    """`grpo_loss`'s per-token values of one group, each ``(G, L)`` and 0 off the mask.

    Attributes:
        loss: The surrogate plus ``beta * KL`` (with grad).
        kl: The k3 KL estimate (no grad; zeros when ``beta == 0``).
        clipped_low: 1 where ``ratio < 1 - epsilon`` and ``A < 0`` (the clip binds below).
        clipped_high: 1 where ``ratio > 1 + epsilon_high`` and ``A > 0`` (binds above).
        entropy: The policy's entropy per token (no grad), when the caller measured it.
    """

    loss: torch.Tensor
    kl: torch.Tensor
    clipped_low: torch.Tensor
    clipped_high: torch.Tensor
    entropy: torch.Tensor | None = None


def grpo_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    old_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    importance_sampling_level: Literal["token", "sequence"] = "token",
) -> TokenLoss:
    """Per-token GRPO loss of one group (PPO's clipped surrogate, DAPO's clip-higher, GSPO's
    sequence-level ratio, the k3 KL), as TRL's ``GRPOTrainer`` computes it::

        log_w_it = logp_it - old_it                                   (token level)
        log_w_it = sum_t m_it (logp_it - old_it) / max(1, sum_t m_it)  (sequence level, GSPO)
        w = exp(log_w)
        loss_it = -min(w A_i, clip(w, 1 - epsilon, 1 + epsilon_high) A_i) + beta KL_it
        KL_it   = exp(ref_it - logp_it) - (ref_it - logp_it) - 1       (k3, >= 0)

    With ``old_logp`` None (one update per batch of rollouts) ``old = logp.detach()``: the
    ratio is 1 and the gradient is ``-A grad(logp)``; the clip binds only from the second
    update on the same rollouts (``num_iterations`` > 1).

    Args:
        logp: Policy log-probs ``(G, L)``, with grad.
        advantages: ``(G,)``.
        mask: ``(G, L)``, 1 on completion tokens that count.
        ref_logp: Reference log-probs (needed when ``beta > 0``).
        old_logp: Log-probs under the weights that sampled the completions.
        beta: KL coefficient.
        epsilon: Lower clip range (and upper, unless ``epsilon_high`` is given).
        epsilon_high: Upper clip range (DAPO's clip-higher; None: ``epsilon``).
        importance_sampling_level: ``"token"`` (PPO, GRPO) or ``"sequence"`` (GSPO).
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    old_logp = logp.detach() if old_logp is None else old_logp
    mask = mask.to(logp.dtype)
    log_w = logp - old_logp
    if importance_sampling_level == "sequence":
        log_w = ((log_w * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]
    elif importance_sampling_level != "token":
        raise ValueError(f"importance_sampling_level must be token or sequence, "
                         f"got {importance_sampling_level!r}")  # fmt: skip
    ratio = torch.exp(log_w).expand_as(logp)
    adv = advantages.to(logp.dtype)[:, None]
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + eps_high) * adv)
    kl = torch.zeros_like(logp)
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    ratio = ratio.detach()
    low = ((ratio < 1 - epsilon) & (adv < 0)).to(logp.dtype) * mask
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(logp.dtype) * mask
    return TokenLoss(loss * mask, kl.detach() * mask, low, high)


def reduce_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    *,
    n_sequences: int,
    n_tokens: int,
    max_new_tokens: int,
    num_processes: int = 1,
    global_tokens: int | None = None,
) -> torch.Tensor:
    """One group's share of the batch loss, so that the shares of every group of the batch sum
    to TRL's loss for that ``loss_type``. With ``S`` sequences and ``T`` real tokens in this
    process's batch (``T_all`` over all ``W`` processes, whose gradients are averaged):

    * ``grpo``: ``sum_i [sum_t l_it m_it / max(1, sum_t m_it)] / S`` (each completion's token
      mean, then the mean over completions: short completions weigh more per token);
    * ``bnpo``: ``sum l m / max(1, T)`` (the token mean of the local batch);
    * ``dr_grpo``: ``sum l m / (S * max_new_tokens)`` (Dr. GRPO: a constant, no length bias);
    * ``dapo``: ``sum l m / max(1, T_all / W)`` (DAPO: the token mean of the global batch).

    Args:
        per_token: ``(G, L)``, already 0 off the mask (`TokenLoss.loss`).
        mask: ``(G, L)``.
        loss_type: One of `LOSS_TYPES`.
        n_sequences: ``S``.
        n_tokens: ``T``.
        max_new_tokens: The rollouts' completion budget.
        num_processes: ``W``.
        global_tokens: ``T_all`` (``dapo`` only; default ``T * W``).
    """
    if loss_type == "grpo":
        lengths = mask.to(per_token.dtype).sum(-1).clamp(min=1.0)
        return (per_token.sum(-1) / lengths).sum() / max(n_sequences, 1)
    if loss_type == "bnpo":
        return per_token.sum() / max(n_tokens, 1)
    if loss_type == "dr_grpo":
        return per_token.sum() / (max(n_sequences, 1) * max_new_tokens)
    if loss_type == "dapo":
        total = n_tokens * num_processes if global_tokens is None else global_tokens
        return per_token.sum() / max(total / num_processes, 1.0)
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")


@dataclass
class Rollout:
    """One GRPO group: a prompt, its G completions and their scores.

    Attributes:
        inputs: The prompt's model inputs (batch 1), on the model's device.
        completion_ids: ``(G, L)`` sampled tokens, right-padded.
        completion_mask: ``(G, L)``, 1 up to and including the first end-of-turn.
        truncated: ``(G,)`` True where a completion hit ``max_new_tokens`` without ending.
        texts: The decoded completions (end-of-turn and padding dropped).
        rewards: ``(G,)`` weighted total reward.
        reward_parts: Reward name -> per-completion values (None where it does not apply).
        advantages: ``(G,)`` (`group_advantages`; set by the trainer for the whole batch).
        old_logp: ``(G, L)`` log-probs under the sampling weights, kept from the first update
            when ``num_iterations > 1``.
        shaped: The advantages were shaped by entropy already (first update), so later
            updates on the same rollouts use the same ones.
        box_probes: What the box head read (`medvl.train.rollouts.BoxProbes`), when its box
            was drawn from a Gaussian policy (``box_head_std > 0``).
        box_actions: ``(G, 2 * dim)`` the drawn boxes before clamping (the actions whose
            log-density trains the head); rows without a ``<|box|>`` are ignored.
        box_present: ``(G,)`` True where the completion had a box to draw.
        prefix: The rollout's forward over the prompt, made with grad
            (`medvl.train.logprobs.Prefix`), for the first policy pass to continue
            (``share_prefill``); None once used.
    """

    inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list[str]
    rewards: torch.Tensor
    reward_parts: dict[str, list[float | None]]
    advantages: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    shaped: bool = False
    box_probes: Any = None
    box_actions: torch.Tensor | None = None
    box_present: torch.Tensor | None = None
    prefix: Any = None

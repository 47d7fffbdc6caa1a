"""The GRPO objective: reward functions from config names, the group of one prompt
(`Rollout`), and the clipped surrogate with the k3 KL estimator (`grpo_loss`), as in
DeepSeekMath and TRL. The trainer loop lives in `medvl.train.grpo`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from medvl.train import rewards as R

__all__ = ["STD_EPS", "Rollout", "build_rewards", "grpo_loss"]

STD_EPS = 1e-4  # added to the group's reward std: a group of equal rewards gets advantages 0


def build_rewards(names: Sequence[str], family: str) -> list[R.RewardFunc]:
    """Reward functions for config names (``format``, ``accuracy``, ``box_iou``, ``severity``,
    ``reasoning_length``); ``box_iou`` reads boxes the way ``family`` writes them."""
    table: dict[str, Callable[[], R.RewardFunc]] = {
        "format": lambda: R.format_reward,
        "accuracy": lambda: R.accuracy_reward,
        "box_iou": lambda: R.box_iou_reward(family),
        "severity": lambda: R.severity_reward,
        "reasoning_length": R.reasoning_length_reward,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; valid: {', '.join(table)}")
    return [table[n]() for n in names]


def grpo_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    old_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GRPO loss and KL of one group, ``(G, L)`` each (0 on padding).

    Args:
        logp: Policy log-probs ``(G, L)``, with grad.
        advantages: ``(G,)``.
        mask: ``(G, L)``, 1 on real completion tokens.
        ref_logp: Reference log-probs (needed when ``beta > 0``).
        old_logp: Log-probs of the policy that sampled; default ``logp.detach()`` (one update
            per batch: ratio 1, gradient of ``logp``).
        beta: KL coefficient (k3 estimator).
        epsilon: Clip range of the ratio.
    """
    old_logp = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype)[:, None]
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    kl = torch.zeros_like(logp)
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    mask = mask.to(logp.dtype)
    return loss * mask, kl.detach() * mask


@dataclass
class Rollout:
    """One GRPO group: a prompt, its G completions and their scores.

    Attributes:
        inputs: The prompt's model inputs (batch 1), on the model's device.
        completion_ids: ``(G, L)`` sampled tokens, right-padded.
        completion_mask: ``(G, L)``, 1 up to and including the first end-of-turn.
        texts: The decoded completions (end-of-turn and padding dropped).
        rewards: ``(G,)`` weighted total reward.
        reward_parts: Reward name -> per-completion values (None where it does not apply).
        advantages: ``(G,)`` group-normalised rewards.
    """

    inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    rewards: torch.Tensor
    reward_parts: dict[str, list[float | None]]
    advantages: torch.Tensor

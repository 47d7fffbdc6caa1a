"""`GRPOConfig`: every setting of a GRPO run, loadable from YAML.

The config half of the TRL-shaped pair (`medvl.train.grpo.GRPOTrainer` is the other half). Field
names follow `SFTConfig` where they mean the same thing and TRL's ``GRPOConfig`` for the GRPO
ones (``num_generations``, ``beta``, ``epsilon``, ``reward_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medvl.train.train_config import TrainConfig

__all__ = ["REWARD_NAMES", "GRPOConfig"]

REWARD_NAMES = ("format", "accuracy", "box_iou", "box_head", "severity", "reasoning_length")
"""Names ``rewards`` accepts (see `medvl.train.rewards`)."""


@dataclass
class GRPOConfig(TrainConfig):
    """Everything a GRPO run needs; load it with `GRPOConfig.from_yaml` (see `medvl.config`).

    The shared fields are `TrainConfig`'s; for GRPO, ``train_manifest`` holds the prompts (each
    Sample is one group), ``batch_size`` is prompts per optimizer step (per process; their
    groups are backpropagated one at a time, so it accumulates gradients over prompts with
    about the memory of one group; see ``share_prefill``), ``heads`` are loaded and get a
    gradient only as the box head's Gaussian policy (``box_head_std`` > 0), and the reference
    model for the KL term is the model GRPO started from: a ``model`` folder holding a LoRA
    adapter (SFT's ``final/``) keeps training that adapter (``lora`` is not used) beside a
    frozen copy of it; with a new ``lora`` the reference is the model with the adapter disabled
    (no second copy); with full fine-tuning and ``beta > 0`` a frozen copy of the start model
    is kept. GRPO adds:

    Attributes:
        num_generations: G, completions per prompt (>= 2: advantages are relative to the group).
        max_new_tokens: Longest completion.
        temperature: Sampling temperature of the rollouts.
        top_p: Nucleus sampling of the rollouts (1.0: off). Set explicitly because Qwen-VL
            checkpoints ship near-greedy generation defaults.
        top_k: Top-k sampling of the rollouts (0: off).
        beta: KL coefficient (k3 estimator against the reference model); 0 skips the reference
            forward entirely.
        epsilon: Clip range of the importance ratio (below, and above unless
            ``epsilon_high`` is set).
        epsilon_high: Upper clip range (DAPO's clip-higher, e.g. 0.28; None: ``epsilon``).
        num_iterations: μ, optimizer updates on each batch of rollouts. With μ > 1 the ratio
            to the sampling weights moves away from 1 and the clip binds. One step is one
            batch of rollouts, so the optimizer and the scheduler step μ times per step.
        importance_sampling_level: ``token`` (PPO/GRPO ratios per token) or ``sequence``
            (GSPO: one ratio per completion, the exp of its mean log-ratio).
        loss_type: How token losses become the batch loss (`medvl.train.grpo_loss.reduce_loss`):
            ``dapo`` (token mean over all processes; TRL's default), ``bnpo`` (token mean per
            process), ``grpo`` (mean of each completion's token mean), ``dr_grpo`` (sum over
            completions × max_new_tokens).
        scale_rewards: Divide advantages by the reward std of the ``group``, the ``batch`` or
            ``none`` (Dr. GRPO).
        entropy_shaping: α of uncertainty-aware advantage shaping
            (`medvl.train.grpo_loss.entropy_shaped_advantages`; 0: off, below 1).
        mask_truncated_completions: Completions that hit ``max_new_tokens`` without ending
            take no part in the loss (DAPO); they still count in the group's advantages.
        dynamic_sampling: DAPO's dynamic sampling: a group whose rewards are all equal has no
            advantage to learn from, so up to this many further batches are drawn per step
            and their groups with reward spread replace those (0: off). The step then learns
            from ``batch_size`` informative groups when the draws find them; the batches
            drawn count as consumed, as a resumed run sees them.
        box_head_std: σ of the box head's Gaussian policy, in normalised box units (e.g.
            0.05). With the ``box_head`` reward, each completion's box is drawn from
            N(head's box, σ²) per coordinate, the reward scores the drawn box, and the head (and
            the hidden state it reads) is trained by REINFORCE on the draw's log-density with
            the group's advantage: ``loss += -Σ_i A_i log N(a_i; μ_θ, σ²) / n_sequences``
            (no importance ratio, clip or KL on this term). 0: the head's box is scored as is
            and gets no gradient.
        share_prefill: The rollout's forward over the prompt and its scan is made with grad
            and also serves the policy's first log-prob pass: one prefill per step instead of
            two, so the scan goes through the vision tower once per step even when it trains.
            Each prompt's prefill graph then lives from its rollout to its backward (with
            ``batch_size`` B, B of them at once; false keeps the memory of one group). Used
            only where it gives the same numbers: without gradient checkpointing and without
            active dropout (LoRA or attention dropout, which the rollout samples without).
        rewards: Reward names, from ``format``, ``accuracy``, ``box_iou``, ``box_head`` (the
            box head's prediction; needs a model with a box head), ``severity``,
            ``reasoning_length`` (`medvl.train.rewards`).
        reward_weights: One weight per reward (None: all 1.0). A reward's None for a row (it
            does not apply) counts as 0 for that row.
    """

    output_dir: str = "outputs/grpo"
    run_name: str = "grpo"
    lr: float = 1e-6
    lr_scheduler: Literal["cosine", "linear", "constant"] = "constant"
    max_steps: int = 100
    save_every: int | None = 100
    log_every: int = 1
    num_generations: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    importance_sampling_level: Literal["token", "sequence"] = "token"
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    dynamic_sampling: int = 0
    entropy_shaping: float = 0.0
    box_head_std: float = 0.0
    share_prefill: bool = True
    rewards: list[str] = field(default_factory=lambda: ["format", "accuracy", "severity"])
    reward_weights: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive(max_new_tokens=self.max_new_tokens, num_iterations=self.num_iterations)
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2, got {self.num_generations}")
        if self.dynamic_sampling < 0:
            raise ValueError(f"dynamic_sampling must be >= 0, got {self.dynamic_sampling}")
        if self.box_head_std < 0:
            raise ValueError(f"box_head_std must be >= 0, got {self.box_head_std}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.entropy_shaping < 1:
            raise ValueError(f"entropy_shaping must be in [0, 1), got {self.entropy_shaping}")
        if self.beta < 0 or self.epsilon < 0 or (self.epsilon_high or 0) < 0:
            raise ValueError("beta, epsilon and epsilon_high must be >= 0")
        unknown = [r for r in self.rewards if r not in REWARD_NAMES]
        if unknown:
            raise ValueError(f"unknown rewards {unknown}; valid: {', '.join(REWARD_NAMES)}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} values for "
                f"{len(self.rewards)} rewards"
            )

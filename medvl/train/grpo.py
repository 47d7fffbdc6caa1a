"""GRPO (group relative policy optimisation) of a `MedVLM` with verifiable rewards.

TRL's shape (a config dataclass and a trainer taking it) on `accelerate`::

    config = GRPOConfig.from_yaml("configs/grpo_tiny.yaml", ["--lr", "1e-5"])
    final_dir = GRPOTrainer(config).train()

or ``python -m medvl.train.grpo --config configs/grpo_tiny.yaml [--key value ...] [--resume]``.

One step takes ``batch_size`` prompts (dataset items). For each prompt:

1. the question is encoded once (`MedVLM.encode_question`) and G = ``num_generations``
   completions are sampled from one prefill of the prompt and its scan
   (`medvl.train.rollouts.sample_group`: the KV cache is copied to G rows of a static
   cache); that prefill is made with grad and serves the policy pass of step 4 too
   (``share_prefill``);
2. every reward scores the G completions with the Sample's columns (TRL signature, see
   `medvl.train.rewards`); the total is the weighted sum, a reward's None counting 0;
3. advantages are relative to the group (`medvl.train.grpo_loss.group_advantages`, scaled by
   the group's or the batch's reward std, or not, as ``scale_rewards`` says);
4. per-token log-probs of the completions at the sampling temperature, under the policy (with
   grad) and, when ``beta > 0``, the reference model (no grad) come from
   `shared_prefix_logprobs`: the scan goes through the vision encoder once and the prompt's KV
   cache is shared by the G completions;
5. the loss is TRL's family (`medvl.train.grpo_loss`): the clipped surrogate with token or
   sequence (GSPO) ratios, DAPO's ``epsilon_high``, the k3 KL, reduced as ``loss_type`` says.

Steps 1 and 2, and DAPO's dynamic sampling, live in `medvl.train.grpo_rollout`.

Then ``num_iterations`` (μ) optimizer updates run on the same rollouts; the log-probs of the
first are kept as the old ones, so from the second update on the ratio moves away from 1 and
the clip binds. Each prompt's part is backpropagated as soon as it is computed, so only one
group's graph is alive at a time.

Reference model: the model GRPO started from. Started from a LoRA checkpoint (SFT's
``final/``), GRPO continues its adapter and the reference is a frozen copy of that adapter
loaded beside it (peft's second adapter: adapter-sized memory); with a new LoRA it is the same
model under ``disable_adapter()``, no copy; with full fine-tuning and ``beta > 0`` a frozen
deep copy of the start model (twice the weight memory; use ``beta: 0`` to avoid it).

The scan goes through the vision tower once per pass instead of G times: once for the rollout
and the policy together (``share_prefill``), once more for a frozen reference copy (full
fine-tuning with ``beta > 0``); a frozen tower (LoRA on the language model) once per step
(`medvl.train.vision_memo.vision_once`).

Several processes: each samples its own prompts; gradients are averaged with one all-reduce
per trainable parameter that every process makes, whether or not it had a gradient.

The box head: with the ``box_head`` reward it is read at each completion's ``<|box|>`` token and
its box is scored; with ``box_head_std > 0`` the box is drawn from a Gaussian around the head's
and the head trains by REINFORCE on the draw (`GRPOTrainer.box_policy_loss`). The mask head gets
no gradient in GRPO.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medvl.config import config_main
from medvl.data.dataset import MedVLDataset
from medvl.train import rewards as R
from medvl.train.data_order import EpochSampler
from medvl.train.grpo_config import GRPOConfig
from medvl.train.grpo_loss import (
    Rollout,
    TokenLoss,
    build_rewards,
    entropy_shaped_advantages,
    group_advantages,
    grpo_loss,
    reduce_loss,
)
from medvl.train.grpo_rollout import GroupRollouts, has_active_dropout, has_spread
from medvl.train.logprobs import completion_logprobs, shared_prefix_logprobs
from medvl.train.rollouts import head_boxes
from medvl.train.run_folder import start_run
from medvl.train.trainer import Trainer, expand_resume, holds_adapter, subset
from medvl.train.vision_memo import vision_once

__all__ = ["GRPOConfig", "GRPOTrainer", "Rollout", "build_rewards", "grpo_loss", "run_grpo"]

logger = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"  # the start checkpoint's adapter, frozen, for the KL term


def _as_items(batch: list) -> list:
    return batch


class GRPOTrainer(GroupRollouts, Trainer):
    """GRPO on a `MedVLM` with accelerate: LoRA or full, KL to a reference, atomic checkpoints
    and resume (`medvl.train.checkpoint`).

    Args:
        config: The run's settings.
        model: A `MedVLM` (default: `medvl.train.trainer.load_model(config)`).
        train_dataset: Items with ``sample`` and ``scan`` (default: `MedVLDataset` of
            ``config.train_manifest``).
        reward_funcs: Reward callables with TRL's signature; default the ones ``config.rewards``
            names. Each is logged under its ``__name__``.
        reward_weights: One weight per reward function; default ``config.reward_weights`` when
            the rewards come from the config, else 1.0 each.
    """

    def __init__(
        self,
        config: GRPOConfig,
        model: Any = None,
        train_dataset: Dataset | None = None,
        reward_funcs: Sequence[R.RewardFunc] | None = None,
        reward_weights: Sequence[float] | None = None,
    ) -> None:
        cfg = config
        model = self._start(config, model)
        if reward_funcs is None:
            reward_funcs = build_rewards(cfg.rewards, model.family)
            reward_weights = reward_weights or cfg.reward_weights
        self._set_rewards(reward_funcs, reward_weights)
        if train_dataset is None:
            train_dataset = MedVLDataset(cfg.train_manifest, cfg.dataset)
        self.train_dataset = subset(train_dataset, cfg.max_train_samples)
        self.sampler = EpochSampler(len(self.train_dataset), seed=cfg.seed)
        loader = DataLoader(
            self.train_dataset, batch_size=cfg.batch_size, sampler=self.sampler,
            collate_fn=_as_items, generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        self.is_lora = hasattr(model.model, "disable_adapter")
        self.ref_model, self.ref_adapter = None, None
        if cfg.box_head_std > 0 and R.box_head_iou_reward not in self.reward_funcs:
            raise ValueError("box_head_std > 0 trains the box head from the box_head reward; "
                             "add 'box_head' to rewards")  # fmt: skip
        if cfg.box_head_std > 0 and cfg.gradient_checkpointing:
            raise ValueError("box_head_std > 0 with gradient_checkpointing is not supported: the "
                             "head's policy pass shares the prompt's KV cache")  # fmt: skip
        if cfg.beta > 0 and not self.is_lora:  # full fine-tuning: a frozen copy of the start
            self.ref_model = copy.deepcopy(model.model).eval().requires_grad_(False)
        elif cfg.beta > 0 and holds_adapter(cfg.model):
            # Started from a LoRA checkpoint (SFT's output): the reference is that model, so a
            # frozen copy of its adapter sits beside the one that trains (adapter-sized).
            model.model.load_adapter(cfg.model, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            self.ref_adapter = REFERENCE_ADAPTER
        self._prepare(model, loader, len(self.train_dataset))
        self.shares_prefill = cfg.share_prefill and not cfg.gradient_checkpointing \
            and not has_active_dropout(self.vlm.model)  # fmt: skip
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self._start_schedule(cfg.max_steps, cfg.num_iterations)

    # -- loss -------------------------------------------------------------------------------

    @contextmanager
    def _reference(self) -> Iterator[Any]:
        """The reference model's inner HF model: the frozen copy (full fine-tuning), the start
        checkpoint's adapter (frozen, from a LoRA checkpoint) or the base (a new adapter
        disabled)."""
        hf = self.vlm.model
        if self.ref_model is not None:
            yield self.ref_model
        elif self.ref_adapter is not None:
            training = hf.active_adapter
            hf.set_adapter(self.ref_adapter, inference_mode=True)
            try:
                yield hf
            finally:  # makes the training adapter trainable again, the reference frozen
                hf.set_adapter(training)
        else:
            with hf.disable_adapter():
                yield hf

    def loss_mask(self, rollout: Rollout) -> torch.Tensor:
        """The tokens that count in the loss: the completion mask, without truncated
        completions when ``mask_truncated_completions`` is set."""
        mask = rollout.completion_mask
        if self.config.mask_truncated_completions:
            mask = mask * (~rollout.truncated).to(mask.device, mask.dtype)[:, None]
        return mask

    def group_loss(
        self, rollout: Rollout, sizes: Mapping[str, int]
    ) -> tuple[torch.Tensor, TokenLoss]:
        """One group's share of the batch loss (with grad) and its per-token values.

        ``sizes`` are `reduce_loss`'s counts for the batch (``n_sequences``, ``n_tokens``,
        ``max_new_tokens``, ``num_processes``, ``global_tokens``). On the first call for a
        rollout with ``num_iterations > 1`` the policy's log-probs are kept as the old ones.
        """
        cfg, hf = self.config, self.vlm.model
        args = (rollout.inputs, rollout.completion_ids, rollout.completion_mask)
        ref = None
        if cfg.beta > 0:
            # The forwards call the inner model, not accelerate's wrapper: autocast here.
            with torch.no_grad(), self._reference() as ref_model, self.accelerator.autocast():
                ref = shared_prefix_logprobs(ref_model, *args, temperature=cfg.temperature)
        # A checkpointed forward in training mode keeps no KV cache to share.
        policy = completion_logprobs if cfg.gradient_checkpointing else shared_prefix_logprobs
        # The rollout's prefill, with grad: it serves this first update only (the weights move).
        prefix, rollout.prefix = rollout.prefix, None
        shared = {} if prefix is None else {"prefix": prefix}
        entropy: list[torch.Tensor] = []
        with self.accelerator.autocast():
            logp = policy(hf, *args, temperature=cfg.temperature, entropy=entropy, **shared)
        if cfg.num_iterations > 1 and rollout.old_logp is None:
            # Before the first update these weights are the ones that sampled.
            rollout.old_logp = logp.detach()
        mask = self.loss_mask(rollout).to(logp.device)
        if cfg.entropy_shaping > 0 and not rollout.shaped:  # once, at the first update
            rollout.advantages = entropy_shaped_advantages(
                rollout.advantages.to(logp.device), entropy[0], mask, cfg.entropy_shaping
            )
            rollout.shaped = True
        tokens = grpo_loss(
            logp, rollout.advantages.to(logp.device), mask, ref_logp=ref,
            old_logp=rollout.old_logp, beta=cfg.beta, epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high,
            importance_sampling_level=cfg.importance_sampling_level,
        )  # fmt: skip
        tokens.entropy = entropy[0] * mask
        loss = reduce_loss(tokens.loss, mask, cfg.loss_type, **sizes)
        if rollout.box_actions is not None:
            loss = loss + self.box_policy_loss(rollout, sizes["n_sequences"], prefix)
        return loss, tokens

    def box_policy_loss(
        self, rollout: Rollout, n_sequences: int, prefix: Any = None
    ) -> torch.Tensor:
        """REINFORCE on the box head's Gaussian policy (``config.box_head_std`` = σ):
        ``-Σ_i A_i log N(a_i; μ_θ(i), σ²) / n_sequences`` over the completions with a box,
        where ``a_i`` is the box drawn in the rollout and ``μ_θ(i)`` the head's box now (with
        grad, through the hidden state it reads; on ``prefix``, the policy pass's prefill, when
        given). The constant of the log-density is dropped."""
        with self.accelerator.autocast():
            means, present = head_boxes(self.vlm, rollout.inputs, rollout.box_probes, prefix)
        means = means.float()
        actions = rollout.box_actions.to(means.device)
        log_density = -((actions - means) ** 2).sum(dim=1) / (2 * self.config.box_head_std**2)
        advantages = rollout.advantages.to(means.device) * present.to(means.device)
        return -(advantages * log_density).sum() / n_sequences

    def _sizes(self, rollouts: Sequence[Rollout]) -> dict[str, int]:
        """`reduce_loss`'s counts for a batch; the global token count is summed over every
        process (each calls this once per step, so the collective is matched)."""
        acc, cfg = self.accelerator, self.config
        n_tokens = int(sum(int(self.loss_mask(r).sum()) for r in rollouts))
        global_tokens = n_tokens
        if acc.num_processes > 1:
            count = torch.tensor(float(n_tokens), device=acc.device)
            global_tokens = int(acc.reduce(count, reduction="sum").item())
        return {
            "n_sequences": len(rollouts) * cfg.num_generations, "n_tokens": n_tokens,
            "max_new_tokens": cfg.max_new_tokens, "num_processes": acc.num_processes,
            "global_tokens": global_tokens,
        }  # fmt: skip

    def _update(self) -> float | None:
        """Averages gradients over processes, clips, steps; returns the gradient norm.

        Every process reduces every trainable parameter in the same order, with zeros where
        it has no gradient (all its groups had equal rewards): a process that skipped its
        backward still makes the same collective calls as the others, so none waits forever.
        """
        acc, cfg = self.accelerator, self.config
        params = [p for p in self.vlm.trainable_parameters() if p.requires_grad]
        if acc.num_processes > 1:  # the forwards bypassed DDP: average gradients here
            for p in params:
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                grad = acc.reduce(grad, reduction="mean")
                # No process had a gradient: leave it None, as a single process would.
                p.grad = grad if p.grad is not None or bool(grad.any()) else None
        params = [p for p in params if p.grad is not None]
        grad_norm = None
        if cfg.max_grad_norm is not None and params:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return grad_norm

    def step(
        self, items: Sequence[Mapping[str, Any]], more: Iterator[Sequence[Any]] | None = None
    ) -> dict[str, float]:
        """One step on a batch of prompts: rollouts, then ``num_iterations`` optimizer
        updates on them; returns the logged values (averaged over the updates).

        With ``config.dynamic_sampling``, further batches come from ``more`` to replace
        groups whose rewards are all equal."""
        with vision_once(self.vlm.model):
            return self._step(items, more)

    def _step(
        self, items: Sequence[Mapping[str, Any]], more: Iterator[Sequence[Any]] | None = None
    ) -> dict[str, float]:
        acc, cfg = self.accelerator, self.config
        started = time.perf_counter()
        rollouts, drawn = self._informative_rollouts(items, more)
        rewards = torch.stack([r.rewards for r in rollouts])
        for r, adv in zip(rollouts, group_advantages(rewards, cfg.scale_rewards), strict=True):
            r.advantages = adv
        sizes = self._sizes(rollouts)
        sums = dict.fromkeys(("loss", "kl", "clip_low", "clip_high", "entropy"), 0.0)
        grad_norms = []
        for _ in range(cfg.num_iterations):
            sync = acc.no_sync(self.model) if acc.num_processes > 1 else nullcontext()
            with sync:
                for r in rollouts:
                    # All-equal rewards and no KL: the loss and its gradient are exactly 0.
                    if cfg.beta == 0 and not bool(r.advantages.abs().gt(0).any()):
                        continue
                    loss, tokens = self.group_loss(r, sizes)
                    acc.backward(loss)
                    sums["loss"] += float(loss.detach())
                    sums["kl"] += float(tokens.kl.sum())
                    sums["clip_low"] += float(tokens.clipped_low.sum())
                    sums["clip_high"] += float(tokens.clipped_high.sum())
                    sums["entropy"] += float(tokens.entropy.sum())
            norm = self._update()
            if norm is not None:
                grad_norms.append(norm)
        mu, n_tokens = cfg.num_iterations, max(sizes["n_tokens"], 1)
        lengths = torch.cat([r.completion_mask.sum(1) for r in rollouts]).float()
        elapsed = time.perf_counter() - started
        record: dict[str, float] = {
            "loss": sums["loss"] / mu,
            "kl": sums["kl"] / (mu * n_tokens),
            "clip_ratio/low": sums["clip_low"] / (mu * n_tokens),
            "clip_ratio/high": sums["clip_high"] / (mu * n_tokens),
            "entropy": sums["entropy"] / (mu * n_tokens),
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std(dim=1).mean()),
            "completion_length": float(lengths.mean()),
            "truncated": float(torch.cat([r.truncated for r in rollouts]).float().mean()),
            "groups_with_spread": sum(has_spread(r) for r in rollouts) / len(rollouts),
            "groups_drawn": float(drawn),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "step_time": elapsed,
            "tokens_per_s": float(lengths.sum()) / elapsed,
        }
        for name in self.reward_names:
            values = [v for r in rollouts for v in r.reward_parts[name] if v is not None]
            if values:
                record[f"rewards/{name}"] = sum(values) / len(values)
                record[f"rewards/{name}_std"] = float(torch.tensor(values).std()) \
                    if len(values) > 1 else 0.0  # fmt: skip
        if grad_norms:
            record["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return record

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> Path:
        """Trains to ``max_steps`` (resuming if ``config.resume_from`` says so), writes
        ``output_dir/final`` and returns it."""
        acc, cfg = self.accelerator, self.config
        resume = start_run(acc, cfg, self.output_dir)
        if resume is not None:
            self._resume(resume)
        acc.init_trackers(cfg.run_name, config=cfg.to_flat_dict())
        st = self.state
        bar = tqdm(
            total=cfg.max_steps, initial=st.global_step, desc="grpo", unit="step",
            disable=not (acc.is_main_process and cfg.progress), dynamic_ncols=True,
        )  # fmt: skip
        self.model.train()
        batches = self._batches()
        while st.global_step < cfg.max_steps:
            record = self.step(next(batches), more=batches)
            st.global_step += 1
            bar.update(1)
            if st.global_step % cfg.log_every == 0 or st.global_step == cfg.max_steps:
                self._record({"step": st.global_step, **record})
                bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.4f}")
            if st.global_step < cfg.max_steps and cfg.save_every \
                    and st.global_step % cfg.save_every == 0:  # fmt: skip
                self.save_checkpoint()
        bar.close()
        if self._saved_step != st.global_step:
            self.save_checkpoint()
        final = self.save_final()
        acc.end_training()
        return final


def run_grpo(config_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Runs GRPO from a YAML config and CLI-style overrides; returns ``output_dir/final``.

    ``--resume`` alone means ``--resume_from latest``. What ``medvl grpo --config X`` calls.

    Raises:
        ConfigError: A bad config file or override (the message names the key).
    """
    config = GRPOConfig.from_yaml(config_path, expand_resume(overrides))
    return GRPOTrainer(config).train()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medvl.train.grpo --config FILE [--key value ...] [--resume]``."""
    return config_main(run_grpo, "medvl.train.grpo", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())

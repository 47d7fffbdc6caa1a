"""GRPO (group relative policy optimisation) of a `MedVLM` with verifiable rewards.

TRL's shape (a config dataclass and a trainer taking it) on `accelerate`::

    config = GRPOConfig.from_yaml("configs/grpo_tiny.yaml", ["--lr", "1e-5"])
    final_dir = GRPOTrainer(config).train()

or ``python -m medvl.train.grpo --config configs/grpo_tiny.yaml [--key value ...] [--resume]``.

One optimizer step takes ``batch_size`` prompts (dataset items). For each prompt:

1. the question is encoded once (`MedVLM.encode_question`) and G = ``num_generations``
   completions are sampled (``generate(..., num_return_sequences=G)``);
2. every reward scores the G completions with the Sample's columns (TRL signature, see
   `medvl.train.rewards`); the total is the weighted sum, a reward's None counting 0;
3. advantages are group-normalised: ``A = (r - mean(r)) / (std(r) + 1e-4)``;
4. per-token log-probs of the completions under the policy (with grad) and, when ``beta > 0``,
   the reference model (no grad) come from `shared_prefix_logprobs`: the scan goes through the
   vision encoder once and the prompt's KV cache is shared by the G completions;
5. per token ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * KL`` with the k3
   estimator ``KL = exp(ref - logp) - (ref - logp) - 1`` (DeepSeekMath, TRL).

The loss is the mean of that over every real completion token of the batch (tokens up to and
including the first end-of-turn); each prompt's part is backpropagated as soon as it is computed,
so only one group's graph is alive at a time. One policy update per batch, so the "old" policy is
the current one: ``ratio = exp(logp - logp.detach())`` is 1 with the gradient of ``logp`` and
the clip never binds (kept for the formula's sake and for a future multi-iteration mode).

Reference model: with LoRA it is the same model under ``disable_adapter()`` (peft), no copy;
with full fine-tuning and ``beta > 0`` a frozen deep copy of the start model (twice the weight
memory; use ``beta: 0`` to avoid it).

Limits: rollouts use ``generate``, which repeats the prompt G times (the shared prefix is used
for the log-probs, not yet for sampling); the heads get no gradient; with several processes each
normalises its loss by its own token count and gradients are averaged.
"""

from __future__ import annotations

import copy
import logging
import os
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
from medvl.train.grpo_loss import STD_EPS, Rollout, build_rewards, grpo_loss
from medvl.train.logprobs import shared_prefix_logprobs
from medvl.train.run_folder import start_run
from medvl.train.trainer import Trainer, expand_resume, subset

__all__ = ["GRPOConfig", "GRPOTrainer", "Rollout", "build_rewards", "grpo_loss", "run_grpo"]

logger = logging.getLogger(__name__)



def _as_items(batch: list) -> list:
    return batch


_COLUMNS = (
    "question",
    "options",
    "answer",
    "answer_type",
    "box",
    "severity",
    "modality",
    "anatomy",
)


def _sample_columns(item: Mapping[str, Any]) -> dict[str, Any]:
    """The reward columns of a dataset item (Sample fields; ``box`` on the preprocessed scan)."""
    sample = item.get("sample")
    fields = dict.fromkeys(_COLUMNS)  # present even when the sample leaves them out
    fields.update(sample.to_dict() if hasattr(sample, "to_dict") else dict(sample or {}))
    if "box" in item:
        fields["box"] = item["box"]
    return fields


class GRPOTrainer(Trainer):
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
        self.reward_funcs = list(reward_funcs)
        self.reward_names = [getattr(f, "__name__", f"reward_{i}")
                             for i, f in enumerate(self.reward_funcs)]  # fmt: skip
        weights = [1.0] * len(self.reward_funcs) if reward_weights is None else reward_weights
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward weights for {len(self.reward_funcs)} rewards")
        self.reward_weights = torch.tensor([float(w) for w in weights])
        if train_dataset is None:
            train_dataset = MedVLDataset(cfg.train_manifest, cfg.dataset)
        self.train_dataset = subset(train_dataset, cfg.max_train_samples)
        self.sampler = EpochSampler(len(self.train_dataset), seed=cfg.seed)
        loader = DataLoader(
            self.train_dataset, batch_size=cfg.batch_size, sampler=self.sampler,
            collate_fn=_as_items, generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        self.is_lora = hasattr(model.model, "disable_adapter")
        self.ref_model = None
        if cfg.beta > 0 and not self.is_lora:  # full fine-tuning: a frozen copy of the start
            self.ref_model = copy.deepcopy(model.model).eval().requires_grad_(False)
        self._prepare(model, loader, len(self.train_dataset))
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self._start_schedule(cfg.max_steps)

    # -- rollouts ---------------------------------------------------------------------------

    def encode(self, item: Mapping[str, Any]) -> Any:
        """`MedVLM.encode_question` for a dataset item (its ``scan`` and ``sample``)."""
        from medvl.model.inputs import Question

        s = _sample_columns(item)
        return self.vlm.encode_question(Question(
            item["scan"], s["question"], s.get("options"), s.get("answer_type"),
            s.get("modality") or None, s.get("anatomy") or None,
        ))  # fmt: skip

    @torch.no_grad()
    def rollout(self, item: Mapping[str, Any]) -> Rollout:
        """Samples G completions of one item's question and scores them."""
        cfg, vlm = self.config, self.vlm
        encoded = self.encode(item)
        inputs = {k: v.to(vlm.device) for k, v in encoded.inputs.items()}
        was_training = vlm.training
        vlm.eval()
        try:
            out = vlm.model.generate(
                **inputs, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                num_return_sequences=cfg.num_generations,
                pad_token_id=vlm.tokenizer.pad_token_id,
            )  # fmt: skip
        finally:
            vlm.train(was_training)
        ids = out[:, inputs["input_ids"].shape[1] :]
        stops = torch.isin(ids, torch.tensor(vlm._stop_ids, device=ids.device))
        # Real tokens: up to and including the first stop (the model learns to stop too).
        before = (stops.long().cumsum(1) - stops.long()) == 0
        mask = before.long()
        texts = [vlm.tokenizer.decode(row[m.bool() & ~s], skip_special_tokens=False)
                 for row, m, s in zip(ids, mask, stops, strict=True)]  # fmt: skip
        total, parts = self.score(texts, item, encoded.context, ids, mask)
        mean, std = total.mean(), total.std()
        advantages = (total - mean) / (std + STD_EPS)
        return Rollout(inputs, ids, mask, texts, total, parts, advantages)

    def score(
        self,
        texts: list[str],
        item: Mapping[str, Any],
        context: Any = None,
        completion_ids: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, list[float | None]]]:
        """Weighted total reward ``(G,)`` and each reward's raw values of G completions."""
        n = len(texts)
        columns = {k: [v] * n for k, v in _sample_columns(item).items()}
        if context is not None:
            columns["image_size"] = [tuple(context.image_size)] * n
        if completion_ids is not None:
            columns["completion_ids"] = [
                row[m.bool()].tolist() for row, m in zip(completion_ids, completion_mask,
                                                         strict=True)
            ]  # fmt: skip
        parts, table = {}, []
        for name, func in zip(self.reward_names, self.reward_funcs, strict=True):
            values = list(func(texts, **columns))
            if len(values) != n:
                raise ValueError(f"reward {name} returned {len(values)} values for {n}")
            parts[name] = values
            table.append([0.0 if v is None else float(v) for v in values])
        scores = torch.tensor(table, dtype=torch.float32).reshape(len(table), n)
        return (self.reward_weights[:, None] * scores).sum(0), parts

    # -- loss -------------------------------------------------------------------------------

    @contextmanager
    def _reference(self) -> Iterator[Any]:
        """The reference model's inner HF model (adapters off, or the frozen copy)."""
        if self.ref_model is not None:
            yield self.ref_model
        else:
            with self.vlm.model.disable_adapter():
                yield self.vlm.model

    def group_loss(self, rollout: Rollout, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one group (its share of the batch's token mean) and its KL sum, with grad."""
        cfg, hf = self.config, self.vlm.model
        args = (rollout.inputs, rollout.completion_ids, rollout.completion_mask)
        ref = None
        if cfg.beta > 0:
            with torch.no_grad(), self._reference() as ref_model:
                ref = shared_prefix_logprobs(ref_model, *args)
        logp = shared_prefix_logprobs(hf, *args)
        per_token, kl = grpo_loss(
            logp, rollout.advantages.to(logp.device), rollout.completion_mask.to(logp.device),
            ref_logp=ref, beta=cfg.beta, epsilon=cfg.epsilon,
        )  # fmt: skip
        return per_token.sum() / max(n_tokens, 1), kl.sum()

    def step(self, items: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """One optimizer step on a batch of prompts; returns the logged values."""
        acc, cfg = self.accelerator, self.config
        rollouts = [self.rollout(item) for item in items]
        n_tokens = int(sum(int(r.completion_mask.sum()) for r in rollouts))
        loss_total, kl_total = 0.0, 0.0
        sync = acc.no_sync(self.model) if acc.num_processes > 1 else nullcontext()
        with sync:
            for r in rollouts:
                # All-equal rewards and no KL: the loss and its gradient are exactly 0.
                if cfg.beta == 0 and not bool(r.advantages.abs().gt(0).any()):
                    continue
                loss, kl = self.group_loss(r, n_tokens)
                acc.backward(loss)
                loss_total += float(loss.detach())
                kl_total += float(kl)
        params = [p for p in self.vlm.trainable_parameters() if p.grad is not None]
        if acc.num_processes > 1:  # the forwards bypassed DDP: average gradients here
            for p in params:
                p.grad = acc.reduce(p.grad, reduction="mean")
        grad_norm = None
        if cfg.max_grad_norm is not None and params:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        record: dict[str, float] = {
            "loss": loss_total,
            "kl": kl_total / max(n_tokens, 1),
            "reward": float(torch.cat([r.rewards for r in rollouts]).mean()),
            "reward_std": float(torch.stack([r.rewards.std() for r in rollouts]).mean()),
            "completion_length": n_tokens / (len(rollouts) * cfg.num_generations),
            "lr": float(self.scheduler.get_last_lr()[0]),
        }
        for name in self.reward_names:
            values = [v for r in rollouts for v in r.reward_parts[name] if v is not None]
            if values:
                record[f"rewards/{name}"] = sum(values) / len(values)
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
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
        while st.global_step < cfg.max_steps:
            self.train_loader.set_epoch(st.epoch)
            loader = self.train_loader
            if st.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, st.batches_in_epoch)
            for items in loader:
                record = self.step(items)
                st.batches_in_epoch += 1
                st.global_step += 1
                bar.update(1)
                if st.global_step % cfg.log_every == 0 or st.global_step == cfg.max_steps:
                    self._record({"step": st.global_step, **record})
                    bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.4f}")
                if st.global_step >= cfg.max_steps:
                    break
                if cfg.save_every and st.global_step % cfg.save_every == 0:
                    self.save_checkpoint()
            else:
                st.epoch, st.batches_in_epoch = st.epoch + 1, 0
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

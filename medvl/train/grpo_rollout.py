"""GRPO's rollouts and their rewards: the half of `medvl.train.grpo.GRPOTrainer` that samples
a group of completions per prompt and scores it.

`GroupRollouts` is a mixin of the trainer (it reads ``config``, ``vlm``, ``accelerator`` and the
rewards `_set_rewards` stores): ``encode`` a dataset item's question, ``rollout`` G completions
from one prefill of the prompt and its scan (`medvl.train.rollouts.sample_group`), ``score``
them with every reward (TRL's signature, the Sample's fields as columns), and, with DAPO's
dynamic sampling, replace groups whose rewards are all equal (`has_spread`) by groups from
further batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from medvl.train import rewards as R
from medvl.train.grpo_loss import Rollout
from medvl.train.logprobs import prefill
from medvl.train.rollouts import box_probes, read_head_boxes, sample_group, sampled_head_boxes

__all__ = ["GroupRollouts", "has_active_dropout", "has_spread", "sample_columns"]

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


def sample_columns(item: Mapping[str, Any]) -> dict[str, Any]:
    """The reward columns of a dataset item (Sample fields; ``box`` on the preprocessed scan)."""
    sample = item.get("sample")
    fields = dict.fromkeys(_COLUMNS)  # present even when the sample leaves them out
    fields.update(sample.to_dict() if hasattr(sample, "to_dict") else dict(sample or {}))
    if "box" in item:
        fields["box"] = item["box"]
    return fields


class GroupRollouts:
    """Sampling and scoring of GRPO's groups, for `medvl.train.grpo.GRPOTrainer`."""

    config: Any
    vlm: Any
    accelerator: Any
    shares_prefill: bool = False

    def _set_rewards(
        self, reward_funcs: Sequence[R.RewardFunc], reward_weights: Sequence[float] | None
    ) -> None:
        """Stores the reward callables, their logged names and weights (default 1.0 each)."""
        self.reward_funcs = list(reward_funcs)
        self.reward_names = [getattr(f, "__name__", f"reward_{i}")
                             for i, f in enumerate(self.reward_funcs)]  # fmt: skip
        weights = [1.0] * len(self.reward_funcs) if reward_weights is None else reward_weights
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward weights for {len(self.reward_funcs)} rewards")
        self.reward_weights = torch.tensor([float(w) for w in weights])

    def encode(self, item: Mapping[str, Any]) -> Any:
        """`MedVLM.encode_question` for a dataset item (its ``scan`` and ``sample``)."""
        from medvl.model.inputs import Question

        s = sample_columns(item)
        return self.vlm.encode_question(Question(
            item["scan"], s["question"], s.get("options"), s.get("answer_type"),
            s.get("modality") or None, s.get("anatomy") or None,
        ))  # fmt: skip

    @torch.no_grad()
    def rollout(self, item: Mapping[str, Any]) -> Rollout:
        """Samples G completions of one item's question and scores them; with
        ``shares_prefill`` the prompt's forward is made with grad and kept for the loss."""
        cfg, vlm = self.config, self.vlm
        encoded = self.encode(item)
        inputs = {k: v.to(vlm.device) for k, v in encoded.inputs.items()}
        prefix = None
        if self.shares_prefill:  # in training mode, as the policy pass would run it
            with torch.enable_grad(), self.accelerator.autocast():
                prefix = prefill(vlm.model, inputs)
        was_training = vlm.training
        vlm.eval()
        try:
            with self.accelerator.autocast():
                ids = sample_group(
                    vlm.model, inputs, cfg.num_generations, cfg.max_new_tokens, vlm._stop_ids,
                    vlm.tokenizer.pad_token_id, temperature=cfg.temperature, top_k=cfg.top_k,
                    top_p=cfg.top_p, prefix=prefix,
                )  # fmt: skip
        finally:
            vlm.train(was_training)
        stops = torch.isin(ids, torch.tensor(vlm._stop_ids, device=ids.device))
        # Real tokens: up to and including the first stop (the model learns to stop too).
        before = (stops.long().cumsum(1) - stops.long()) == 0
        mask = before.long()
        truncated = ~stops.any(dim=1)
        texts = [vlm.tokenizer.decode(row[m.bool() & ~s], skip_special_tokens=False)
                 for row, m, s in zip(ids, mask, stops, strict=True)]  # fmt: skip
        boxes, drawn = None, {}
        if any(f is R.box_head_iou_reward for f in self.reward_funcs):
            with self.accelerator.autocast():
                if cfg.box_head_std > 0:
                    boxes, drawn = self._draw_boxes(inputs, ids, stops, encoded.context, prefix)
                else:
                    boxes = read_head_boxes(vlm, inputs, ids, stops, encoded.context, prefix)
        total, parts = self.score(texts, item, encoded.context, ids, mask, truncated.tolist(),
                                  boxes)  # fmt: skip
        rollout = Rollout(inputs, ids, mask, truncated.cpu(), texts, total, parts, prefix=prefix,
                          **drawn)  # fmt: skip
        if cfg.beta == 0 and not has_spread(rollout):
            rollout.prefix = None  # equal rewards and no KL: the loss skips this group
        return rollout

    def _draw_boxes(
        self,
        inputs: Mapping[str, Any],
        ids: torch.Tensor,
        stops: torch.Tensor,
        context: Any,
        prefix: Any = None,
    ) -> tuple[list[list[float] | None], dict[str, Any]]:
        """The box head's Gaussian policy: per completion, a box drawn around the head's
        (``config.box_head_std``), clamped and ordered into a valid box for the reward; and
        the `Rollout` fields the policy pass trains the head from."""
        probes = box_probes(self.vlm, ids, stops, context)
        if probes is None:
            return [None] * ids.shape[0], {}
        means, present = sampled_head_boxes(self.vlm, inputs, probes, prefix)
        actions = means.float() + self.config.box_head_std * torch.randn_like(means.float())
        k = actions.shape[1] // 2
        lower = torch.minimum(actions[:, :k], actions[:, k:])
        upper = torch.maximum(actions[:, :k], actions[:, k:])
        boxes = torch.cat([lower, upper], dim=1).clamp(0.0, 1.0).cpu().tolist()
        shown = [b if p else None for b, p in zip(boxes, present.tolist(), strict=True)]
        return shown, {"box_probes": probes, "box_actions": actions, "box_present": present}

    def score(
        self,
        texts: list[str],
        item: Mapping[str, Any],
        context: Any = None,
        completion_ids: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
        truncated: Sequence[bool] | None = None,
        head_boxes: Sequence[list[float] | None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, list[float | None]]]:
        """Weighted total reward ``(G,)`` and each reward's raw values of G completions
        (``truncated``: which hit ``max_new_tokens``; the answer rewards score them 0;
        ``head_boxes``: the box head's boxes, for `box_head_iou_reward`)."""
        n = len(texts)
        columns = {k: [v] * n for k, v in sample_columns(item).items()}
        if truncated is not None:
            columns["truncated"] = list(truncated)
        if head_boxes is not None:
            columns["head_box"] = list(head_boxes)
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

    def _informative_rollouts(
        self, items: Sequence[Mapping[str, Any]], more: Iterator[Sequence[Any]] | None
    ) -> tuple[list[Rollout], int]:
        """Rollouts of ``items``; with dynamic sampling, groups without reward spread are
        replaced by those of further batches, at most ``dynamic_sampling`` of them. Returns
        the rollouts (as many as ``items``) and the number of groups rolled out."""
        rollouts = [self.rollout(item) for item in items]
        draws, drawn = 0, len(rollouts)
        if not self.config.dynamic_sampling or more is None:
            return rollouts, drawn
        kept = [r for r in rollouts if has_spread(r)]
        flat = [r for r in rollouts if not has_spread(r)]
        while len(kept) < len(items) and draws < self.config.dynamic_sampling:
            draws += 1
            for item in next(more):
                rollout = self.rollout(item)
                drawn += 1
                (kept if has_spread(rollout) else flat).append(rollout)
        # Short of informative groups after every draw: flat ones fill the batch (with a KL
        # term they still pull towards the reference).
        return (kept + flat)[: len(items)], drawn


def has_active_dropout(model: torch.nn.Module) -> bool:
    """Whether the model drops anything in training mode (a dropout layer, LoRA's included,
    or an attention dropout rate above 0)."""
    return any(
        (isinstance(m, torch.nn.Dropout) and m.p > 0)
        or float(getattr(m, "attention_dropout", 0.0) or 0.0) > 0
        for m in model.modules()
    )


def has_spread(rollout: Rollout) -> bool:
    """Whether a group's rewards differ (else its advantages are all 0)."""
    return bool((rollout.rewards != rollout.rewards[0]).any())

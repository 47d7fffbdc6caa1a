"""GRPO's rollouts and their scores (`medvl.train.grpo_rollout`), through `GRPOTrainer`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from grpo_helpers import low_ids, make_config

from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.data.sample import Sample
from medvl.train.grpo import GRPOTrainer
from medvl.train.grpo_loss import Rollout
from medvl.train.grpo_rollout import has_spread, sample_columns


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpo-data")
    return generate_phantom_dataset(root, n=1, modalities=("chest",), progress=False)


def only_grounding_varies(completions, completion_ids, answer_type, **kwargs) -> list[float]:
    """Spread for the grounding question only; every other group's rewards are all equal."""
    spread = low_ids(completions, completion_ids)
    return [v if t == "grounding" else 1.0 for v, t in zip(spread, answer_type, strict=True)]


@pytest.mark.parametrize("draws", [0, 12])
def test_dynamic_sampling_replaces_groups_without_spread(manifest, tiny_model_path, tmp_path,
                                                         draws):  # fmt: skip
    """One grounding question among six: without dynamic sampling most steps hold a flat
    group; with it every step learns from the grounding group, drawn from further batches
    that the run's state counts as consumed."""
    out = tmp_path / "run"
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), out, batch_size=1,
                         max_steps=3, log_every=1, dynamic_sampling=draws)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[only_grounding_varies])
    trainer.train()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    spread = [r["groups_with_spread"] for r in log]
    drawn = sum(r["groups_drawn"] for r in log)
    st = trainer.state
    assert drawn == st.epoch * len(trainer.train_dataset) + st.batches_in_epoch
    if draws:
        assert spread == [1.0, 1.0, 1.0] and drawn > 3
    else:
        assert 0.0 in spread and drawn == 3


def test_each_group_is_scored_against_its_own_sample(tiny_model_path, tmp_path):
    """B = 2 prompts of distinct scans in one step: every rollout's reward sees its own
    Sample's columns (id, answer, box), G times, and nothing of the other's."""
    seen: list[tuple] = []

    def own_columns(completions, id, answer, box, **kwargs) -> list[float]:
        seen.append((tuple(id), tuple(answer), tuple(map(str, box))))
        return [float(i) for i in range(len(completions))]  # spread: every group trains

    two = generate_phantom_dataset(tmp_path / "data", n=2, modalities=("chest",), progress=False)
    config = make_config(two, tiny_model_path("qwen2_5_vl"), tmp_path / "run", beta=0.0,
                         max_steps=1)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[own_columns])
    items = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    first = items[0]["sample"]
    other = next(it for it in items if it["sample"].image != first.image
                 and it["sample"].answer != first.answer)  # fmt: skip
    items = [items[0], other]
    trainer.step(items)
    assert len(seen) == 2
    for (ids, answers, boxes), item in zip(seen, items, strict=True):
        sample = item["sample"]
        assert ids == (sample.id,) * 4 and answers == (sample.answer,) * 4
        assert len(set(boxes)) == 1
    assert seen[0][0] != seen[1][0]


def test_sample_columns_name_every_column_and_take_the_preprocessed_box() -> None:
    """Columns the Sample leaves out are present as None (a reward may name them), and the
    item's ``box`` (on the preprocessed scan) replaces the manifest's."""
    sample = Sample(id="a", image="a.png", question="Is there a nodule?", answer="yes",
                    answer_type="closed", box=[0.1, 0.1, 0.2, 0.2])  # fmt: skip
    columns = sample_columns({"sample": sample, "box": [1.0, 2.0, 3.0, 4.0]})
    assert columns["answer"] == "yes" and columns["id"] == "a"
    assert columns["box"] == [1.0, 2.0, 3.0, 4.0]
    assert columns["options"] is None and columns["severity"] is None
    assert sample_columns({"sample": {"answer": "no"}})["box"] is None


def _group(rewards: list[float]) -> Rollout:
    g = len(rewards)
    ids = torch.zeros(g, 2, dtype=torch.long)
    return Rollout({}, ids, torch.ones_like(ids), torch.zeros(g, dtype=torch.bool), [""] * g,
                   torch.tensor(rewards), {})  # fmt: skip


def test_has_spread_tells_flat_groups() -> None:
    assert has_spread(_group([0.0, 1.0, 1.0, 1.0]))
    assert not has_spread(_group([0.5, 0.5, 0.5, 0.5]))
    assert not has_spread(_group([0.0, 0.0]))

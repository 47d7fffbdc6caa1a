"""medvl.train.trainer: what SFT and GRPO share besides their loops."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from medvl.train.sft import SFTConfig
from medvl.train.trainer import Trainer, expand_resume, subset


def test_resume_flag() -> None:
    assert expand_resume(["--resume"]) == ["--resume_from", "latest"]
    assert expand_resume(["--resume", "--lr", "1"]) == ["--resume_from", "latest", "--lr", "1"]
    assert expand_resume(["--resume", "out/checkpoint-4"]) == ["--resume_from", "out/checkpoint-4"]


def test_subset_takes_the_first_items_or_all():
    data = TensorDataset(torch.arange(10))
    assert subset(data, None) is data and subset(data, 50) is data
    assert [int(x[0]) for x in subset(data, 3)] == [0, 1, 2]


def test_a_resume_names_the_changed_keys_that_change_the_run(tmp_path):
    saved = SFTConfig(train_manifest="m.jsonl", lr=1e-4, output_dir="a", log_every=5)
    saved.save_yaml(tmp_path / "config.yaml")
    trainer = Trainer.__new__(Trainer)  # only the config is needed here
    trainer.config = SFTConfig(train_manifest="m.jsonl", lr=2e-4, output_dir="b", log_every=1)
    # output_dir and log_every do not change the trajectory; lr does.
    assert trainer._changed_keys(tmp_path / "config.yaml") == "lr"
    trainer.config = SFTConfig(train_manifest="m.jsonl", lr=1e-4)
    assert trainer._changed_keys(tmp_path / "config.yaml") == ""
    (tmp_path / "bad.yaml").write_text("lr: [oops\n")
    assert trainer._changed_keys(tmp_path / "bad.yaml") == "unreadable checkpoint config"


def test_a_model_without_trainable_parameters_is_refused():
    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2), requires_grad=False)

        def trainable_parameters(self):
            return list(self.parameters())

    trainer = Trainer.__new__(Trainer)
    trainer.config = SFTConfig(train_manifest="m.jsonl", weight_decay=0.1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        trainer._param_groups(Frozen())
    frozen = Frozen()
    frozen.w.requires_grad_(True)
    frozen.m = torch.nn.Parameter(torch.ones(2, 2))
    groups = trainer._param_groups(frozen)
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 0.1), (1, 0.0)]

"""Training: supervised fine-tuning (`SFTConfig`, `SFTTrainer`) and GRPO with verifiable rewards
(`GRPOConfig`, `GRPOTrainer`) on accelerate, YAML configs with command-line overrides, and atomic
checkpoints with exact resume.

Public API::

    SFTConfig.from_yaml(path, overrides) -> SFTConfig
    SFTTrainer(config, model=None, train_dataset=None, eval_dataset=None).train() -> final dir
    run_sft(config_path, overrides) -> final dir     # what `medvl sft` calls
    GRPOConfig, GRPOTrainer, run_grpo                # the same shape; `medvl grpo`
    TrainConfig, Trainer                             # the shared bases of both pairs
    YamlConfig, ConfigError                          # base of every trainer/evaluator config
    latest_checkpoint(output_dir), list_checkpoints(output_dir)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvl._lazy import lazy_getattr

# Resolved on first use: importing torch, accelerate and MONAI takes seconds, and
# `python -m medvl.train.sft` must not import the module twice through the package.
_LAZY = {
    "ConfigError": "medvl.config",
    "YamlConfig": "medvl.config",
    "TrainerState": "medvl.train.checkpoint",
    "latest_checkpoint": "medvl.train.checkpoint_folders",
    "list_checkpoints": "medvl.train.checkpoint_folders",
    "SFTConfig": "medvl.train.sft_config",
    "SFTTrainer": "medvl.train.sft",
    "run_sft": "medvl.train.sft",
    "TrainConfig": "medvl.train.train_config",
    "Trainer": "medvl.train.trainer",
    "GRPOConfig": "medvl.train.grpo_config",
    "GRPOTrainer": "medvl.train.grpo",
    "run_grpo": "medvl.train.grpo",
}

if TYPE_CHECKING:
    from medvl.config import ConfigError, YamlConfig
    from medvl.train.checkpoint import TrainerState
    from medvl.train.checkpoint_folders import latest_checkpoint, list_checkpoints
    from medvl.train.grpo import GRPOTrainer, run_grpo
    from medvl.train.grpo_config import GRPOConfig
    from medvl.train.sft import SFTTrainer, run_sft
    from medvl.train.sft_config import SFTConfig
    from medvl.train.train_config import TrainConfig
    from medvl.train.trainer import Trainer


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "TrainConfig",
    "Trainer",
    "GRPOConfig",
    "GRPOTrainer",
    "run_grpo",
    "ConfigError",
    "SFTConfig",
    "SFTTrainer",
    "TrainerState",
    "YamlConfig",
    "latest_checkpoint",
    "list_checkpoints",
    "run_sft",
]

"""GRPO with a tiny model on phantoms: a step updates the LoRA, equal rewards give no gradient,
a toy verifiable reward rises, configs load with overrides, checkpoints are written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from grpo_helpers import LORA, constant, low_ids, make_config
from safetensors.torch import load_file

from medvl.config import ConfigError
from medvl.data.dataset import DatasetConfig
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.train.checkpoint_folders import STATE_FILE, list_checkpoints
from medvl.train.grpo import GRPOConfig, GRPOTrainer, run_grpo
from medvl.train.grpo_loss import group_advantages
from medvl.train.rollouts import read_head_boxes

ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpo-data")
    return generate_phantom_dataset(root, n=1, modalities=("chest",), progress=False)


def test_one_step_updates_lora_and_writes_checkpoint(manifest, tiny_model_path, tmp_path) -> None:
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run")
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    named = {n: p.detach().clone() for n, p in trainer.vlm.named_parameters() if p.requires_grad}
    assert named and all("lora_" in n for n in named)
    final = trainer.train()

    now = dict(trainer.vlm.named_parameters())
    changed = [n for n, before in named.items() if not torch.equal(now[n].detach(), before)]
    assert any("lora_B" in n for n in changed)
    record = trainer.history[-1]
    keys = ("loss", "kl", "reward", "reward_std", "rewards/low_ids", "completion_length",
            "entropy", "clip_ratio/low", "clip_ratio/high", "truncated", "step_time",
            "tokens_per_s", "rewards/low_ids_std")  # fmt: skip
    for key in keys:
        assert key in record and record[key] == record[key]  # present, not NaN
    assert record["kl"] >= 0 and record["entropy"] > 0
    # Checkpoint contract (medvl.train.checkpoint) and the final model.
    (ckpt,) = list_checkpoints(tmp_path / "run")
    assert ckpt.name == "checkpoint-1"
    assert json.loads((ckpt / STATE_FILE).read_text())["global_step"] == 1
    assert (ckpt / "accelerate" / "optimizer.bin").exists()
    assert (ckpt / "config.yaml").exists() and (final / "config.yaml").exists()
    lines = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 1


def test_equal_rewards_give_zero_gradient(manifest, tiny_model_path, tmp_path) -> None:
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", beta=0.0)
    trainer = GRPOTrainer(config, reward_funcs=[constant])
    rollout = trainer.rollout(trainer.train_dataset[0])
    assert len(set(map(tuple, rollout.completion_ids.tolist()))) > 1  # completions do differ
    assert trainer.shares_prefill and rollout.prefix is None  # nothing to learn: graph let go
    params = trainer.vlm.trainable_parameters()
    rollout.advantages = group_advantages(rollout.rewards[None], "group")[0]
    assert torch.equal(rollout.advantages, torch.zeros(4))
    loss, _ = trainer.group_loss(rollout, trainer._sizes([rollout]))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in params)


def test_second_update_on_the_same_rollouts_is_clipped(manifest, tiny_model_path, tmp_path):
    """μ = 2: the second update sees a ratio away from 1 and a tight clip binds; μ = 1 never
    clips. The optimizer and the schedule step μ times per step."""
    records = {}
    for mu in (1, 2):
        config = make_config(
            manifest, tiny_model_path("qwen2_5_vl"), tmp_path / f"mu{mu}", lora=None, beta=0.0,
            batch_size=1, num_generations=8, num_iterations=mu, epsilon=1e-3, lr=1e-2,
            lr_scheduler="linear", max_steps=2,
        )  # fmt: skip
        trainer = GRPOTrainer(config, reward_funcs=[low_ids])
        trainer.train()
        records[mu] = trainer.history[0]
        state = trainer.optimizer.optimizer.state if hasattr(trainer.optimizer, "optimizer") \
            else trainer.optimizer.state  # fmt: skip
        steps = {int(s["step"]) for s in state.values() if "step" in s}
        assert steps == {2 * mu}
        assert trainer.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * (1 - 2 / 2))
    clipped = lambda r: r["clip_ratio/low"] + r["clip_ratio/high"]  # noqa: E731
    assert clipped(records[1]) == 0.0
    assert clipped(records[2]) > 0.0, records[2]


def test_entropy_shaping_is_applied_once_per_rollout(manifest, tiny_model_path, tmp_path):
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", beta=0.0,
                         entropy_shaping=0.5, num_iterations=2)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    rollout = trainer.rollout(trainer.train_dataset[0])
    plain = group_advantages(rollout.rewards[None], "group")[0]
    rollout.advantages = plain.clone()
    trainer.group_loss(rollout, trainer._sizes([rollout]))
    shaped = rollout.advantages.clone()
    assert rollout.shaped and not torch.allclose(shaped, plain.to(shaped.device))
    assert torch.equal(torch.sign(shaped), torch.sign(plain.to(shaped.device)))
    trainer.group_loss(rollout, trainer._sizes([rollout]))  # the second update: unchanged
    assert torch.equal(rollout.advantages, shaped)


def test_truncated_completions_leave_the_loss(manifest, tiny_model_path, tmp_path) -> None:
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run",
                         mask_truncated_completions=True, max_new_tokens=3)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    rollout = trainer.rollout(trainer.train_dataset[0])
    stop_ids = torch.tensor(trainer.vlm._stop_ids, device=rollout.completion_ids.device)
    ended = torch.isin(rollout.completion_ids, stop_ids).any(dim=1)
    assert torch.equal(rollout.truncated, ~ended.cpu()) and rollout.truncated.any()
    mask = trainer.loss_mask(rollout)
    assert not mask[rollout.truncated.to(mask.device)].any()
    assert torch.equal(mask[~rollout.truncated.to(mask.device)],
                       rollout.completion_mask[~rollout.truncated.to(mask.device)])  # fmt: skip
    trainer.config.mask_truncated_completions = False
    assert torch.equal(trainer.loss_mask(rollout), rollout.completion_mask)


def test_toy_reward_rises(manifest, tiny_model_path, tmp_path) -> None:
    """Full fine-tuning, high lr: GRPO pushes the sampled tokens toward ids < 64."""
    config = make_config(
        manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", lora=None, beta=0.0,
        max_steps=20, batch_size=1, num_generations=8, max_train_samples=2,
    )  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    trainer.train()
    rewards = [r["reward"] for r in trainer.history]
    assert len(rewards) == 20
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.3  # chance is 64 / 512
    assert last > first + 0.3, rewards


def test_config_yaml_overrides_and_errors(tmp_path) -> None:
    path = ROOT / "configs" / "grpo_tiny.yaml"
    config = GRPOConfig.from_yaml(path, ["--lr", "3e-6", "--num_generations", "8"])
    assert config.lr == 3e-6 and config.num_generations == 8
    assert config.rewards[0] == "format" and len(config.reward_weights) == len(config.rewards)
    assert config.lora["r"] == 8 and config.beta == 0.04
    with pytest.raises(ConfigError, match="num_generation"):
        GRPOConfig.from_yaml(path, ["--num_generation", "8"])
    with pytest.raises(ConfigError, match="unknown rewards"):
        GRPOConfig.from_yaml(path, ["--rewards", "format,bleu", "--reward_weights", "1,1"])
    with pytest.raises(ConfigError, match="reward_weights"):
        GRPOConfig.from_yaml(path, ["--reward_weights", "1"])
    with pytest.raises(ConfigError, match="num_generations"):
        GRPOConfig.from_yaml(path, ["--num_generations", "1"])
    with pytest.raises(ConfigError, match="loss_type"):
        GRPOConfig.from_yaml(path, ["--loss_type", "ppo"])
    with pytest.raises(ConfigError, match="num_iterations"):
        GRPOConfig.from_yaml(path, ["--num_iterations", "0"])
    config = GRPOConfig.from_yaml(path, ["--epsilon_high", "0.28", "--scale_rewards", "none"])
    assert config.epsilon_high == 0.28 and config.scale_rewards == "none"


def test_run_grpo_from_yaml(manifest, tiny_model_path, tmp_path) -> None:
    out = tmp_path / "run"
    final = run_grpo(ROOT / "configs" / "grpo_tiny.yaml", [
        "--model", str(tiny_model_path("qwen2_5_vl")), "--train_manifest", str(manifest),
        "--output_dir", str(out), "--max_steps", "1", "--max_new_tokens", "4",
        "--dataset.size", "32", "--report_to", "none", "--progress", "false",
    ])  # fmt: skip
    assert final == out / "final" and (final / "config.yaml").exists()
    assert GRPOConfig.from_yaml(out / "config.yaml").max_steps == 1
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]


def test_full_finetuning_keeps_a_frozen_reference(manifest, tiny_model_path, tmp_path) -> None:
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", lora=None,
                         beta=0.1, max_steps=2, batch_size=1)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    assert trainer.ref_model is not None
    ref_before = {n: p.clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    assert all(torch.equal(p, ref_before[n]) for n, p in trainer.ref_model.named_parameters())
    assert trainer.history[-1]["kl"] > 0  # the policy moved away from the reference


@pytest.fixture(scope="module")
def sft_final(manifest, tiny_model_path, tmp_path_factory) -> Path:
    """A LoRA SFT output (adapter, box head, grounding tokens), as the README makes it."""
    from medvl.train.sft import SFTConfig, SFTTrainer

    out = tmp_path_factory.mktemp("sft")
    config = SFTConfig(
        model=str(tiny_model_path("qwen2_5_vl")), train_manifest=str(manifest),
        dataset=DatasetConfig(size=32), output_dir=str(out), lora=LORA, heads=["box"],
        max_steps=3, lr=5e-2, save_every=None, report_to="none", progress=False,
    )  # fmt: skip
    return SFTTrainer(config).train()


def test_grpo_from_an_sft_lora_checkpoint_keeps_it_as_reference(manifest, sft_final, tmp_path):
    """The README's command: GRPO continues SFT's adapter, and the KL reference is the SFT
    model (first step: policy = reference, KL 0), not the base without the adapter."""
    from medvl.cli import main

    out = tmp_path / "run"
    assert main([
        "grpo", "--config", str(ROOT / "configs" / "grpo_tiny.yaml"), "--model", str(sft_final),
        "--num_generations", "8", "--train_manifest", str(manifest), "--output_dir", str(out),
        "--max_steps", "2", "--max_new_tokens", "6", "--dataset.size", "32",
        "--report_to", "none", "--progress", "false", "--lr", "5e-2", "--batch_size", "1",
    ]) == 0  # fmt: skip
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference at the start
    final = out / "final"
    assert (final / "adapter_model.safetensors").exists() and not (final / "reference").exists()

    # With a reward that has spread, the adapter moves away from SFT's, and the KL grows.
    config = GRPOConfig.from_yaml(out / "config.yaml", [
        "--output_dir", str(tmp_path / "spread"), "--rewards", "format", "--reward_weights", "1",
    ])  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    trainer.train()
    assert trainer.history[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert trainer.history[1]["kl"] > 1e-6
    before, after = (load_file(f / "adapter_model.safetensors")
                     for f in (sft_final, tmp_path / "spread" / "final"))  # fmt: skip
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)

    # The wrong reference, for contrast: the base model without SFT's adapter is far away.
    config = GRPOConfig.from_yaml(out / "config.yaml", ["--max_steps", "1"])
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    rollout = trainer.rollout(trainer.train_dataset[0])
    rollout.advantages = torch.zeros(rollout.rewards.shape)
    _, tokens = trainer.group_loss(rollout, trainer._sizes([rollout]))
    assert float(tokens.kl.sum()) == pytest.approx(0.0, abs=1e-5)
    trainer.ref_adapter = None  # disable_adapter(): the base, the wrong reference
    _, tokens = trainer.group_loss(rollout, trainer._sizes([rollout]))
    assert float(tokens.kl.sum()) > 1e-3


# -- in real processes: SIGKILL and resume, two ranks under torchrun -----------------------------

DRIVER = Path(__file__).with_name("grpo_driver.py")


def _driver_config(manifest: Path, model: Path, out: Path, **changes) -> Path:
    config = {
        "model": str(model), "train_manifest": str(manifest), "dataset": {"size": 32},
        "output_dir": str(out), "lora": None, "max_steps": 6, "batch_size": 2,
        "num_generations": 4, "max_new_tokens": 8, "lr": 1e-2, "beta": 0.04,
        "num_iterations": 2, "save_every": 2, "keep_last": None, "log_every": 1, "seed": 5,
        "report_to": "none", "progress": False,
    }  # fmt: skip
    config.update(changes)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_sigkill_after_a_checkpoint_then_resume_matches(manifest, tiny_model_path, tmp_path):
    model = tiny_model_path("qwen2_5_vl")
    runs = {}
    for name in ("whole", "killed"):
        runs[name] = _driver_config(manifest, model, tmp_path / name)
    whole = _run([sys.executable, str(DRIVER), str(runs["whole"])])
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _run([sys.executable, str(DRIVER), str(runs["killed"])], KILL_AFTER_CHECKPOINT="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "killed")][-1] == "checkpoint-4"
    resumed = _run([sys.executable, str(DRIVER), str(runs["killed"]), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want = torch.load(tmp_path / "whole" / "weights-rank0.pt")
    got = torch.load(tmp_path / "killed" / "weights-rank0.pt")
    start = {n: p for n, p in GRPOTrainer(make_config(manifest, model, tmp_path / "start",
             lora=None), reward_funcs=[low_ids]).vlm.named_parameters()}  # fmt: skip
    assert any(not torch.equal(want[k], start[k].detach()) for k in want)  # it trained
    assert max(float((want[k] - got[k]).abs().max()) for k in want) <= 1e-6
    logs = [[json.loads(line) for line in (tmp_path / r / "train_log.jsonl").open()]
            for r in ("whole", "killed")]  # fmt: skip
    assert [r["step"] for r in logs[1]] == list(range(1, 7))
    assert [r["reward"] for r in logs[1]] == pytest.approx([r["reward"] for r in logs[0]])


def test_two_ranks_one_with_equal_rewards_finish_and_agree(manifest, tiny_model_path, tmp_path):
    """Rank 1's groups all have equal rewards, so it skips every backward; it still joins each
    all-reduce, the run ends (no deadlock) and both ranks hold the same weights."""
    config = _driver_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run",
                            max_steps=3, batch_size=1, beta=0.0, save_every=None)  # fmt: skip
    run = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", str(DRIVER), str(config)],
               ACCELERATE_USE_CPU="true")  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = tmp_path / "run"
    histories = [json.loads((out / f"history-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(h["reward_std"] == 0.0 for h in histories[1])  # rank 1: nothing to learn
    assert any(h["reward_std"] > 0.0 for h in histories[0])
    ranks = [torch.load(out / f"weights-rank{r}.pt") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])


def test_a_frozen_vision_tower_runs_once_per_step(manifest, tiny_model_path, tmp_path) -> None:
    """LoRA on the language model: rollout, reference and policy passes share one encoding of
    the scan, and the loss and its gradients are those of encoding it every time."""
    from medvl.train.logprobs import _vlm
    from medvl.train.vision_memo import vision_once

    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", beta=0.04,
                         batch_size=1)  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    rows: list[int] = []
    visual = _vlm(trainer.vlm.model).model.visual
    visual.patch_embed.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    item = trainer.train_dataset[0]
    inputs = trainer.encode(item).inputs
    scan = sum(v.shape[0] for k, v in inputs.items() if k.startswith("pixel_values"))
    rows.clear()
    trainer.step([item])
    assert sum(rows) == scan  # once, not three times (rollout, reference, policy)

    rollout = trainer.rollout(item)
    rollout.advantages = torch.linspace(-1, 1, rollout.rewards.numel())
    params = trainer.vlm.trainable_parameters()

    def loss_and_grads() -> tuple[float, list[torch.Tensor]]:
        trainer.optimizer.zero_grad()
        loss, _ = trainer.group_loss(rollout, trainer._sizes([rollout]))
        loss.backward()
        return float(loss), [p.grad.clone() for p in params if p.grad is not None]

    plain = loss_and_grads()
    with vision_once(trainer.vlm.model) as reused:
        memo = loss_and_grads()
    assert reused
    assert memo[0] == pytest.approx(plain[0], abs=1e-6)
    assert len(memo[1]) == len(plain[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(memo[1], plain[1], strict=True))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_the_rollouts_prefill_serves_the_policy_pass(manifest, tiny_model_path, tmp_path, family):
    """Full fine-tuning (the vision tower trains), β = 0: with ``share_prefill`` the scan goes
    through the tower once per step, and the samples, loss and gradients are those of a
    separate policy prefill."""
    from medvl.train.logprobs import _vlm

    results = []
    for share in (True, False):
        config = make_config(manifest, tiny_model_path(family), tmp_path / str(share), lora=None,
                             beta=0.0, batch_size=1, share_prefill=share)  # fmt: skip
        trainer = GRPOTrainer(config, reward_funcs=[low_ids])
        assert trainer.shares_prefill is share
        rows: list[int] = []
        visual = _vlm(trainer.vlm.model).model.visual
        visual.patch_embed.register_forward_hook(lambda m, args, out, rows=rows: rows.append(
            args[0].shape[0]))  # fmt: skip
        item = trainer.train_dataset[0]
        scan = sum(v.shape[0] for k, v in trainer.encode(item).inputs.items()
                   if k.startswith("pixel_values"))  # fmt: skip
        torch.manual_seed(0)
        rollout = trainer.rollout(item)
        rollout.advantages = torch.linspace(-1, 1, rollout.rewards.numel())
        loss, _ = trainer.group_loss(rollout, trainer._sizes([rollout]))
        loss.backward()
        grads = [p.grad.clone() for p in trainer.vlm.trainable_parameters() if p.grad is not None]
        assert rollout.prefix is None  # used once, then let go
        results.append((rollout.completion_ids, float(loss.detach()), grads, sum(rows) // scan))
    (ids, loss, grads, passes), (plain_ids, plain_loss, plain_grads, plain_passes) = results
    assert (passes, plain_passes) == (1, 2)
    assert torch.equal(ids, plain_ids)
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    assert len(grads) == len(plain_grads) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, plain_grads, strict=True))


def test_dropout_turns_the_shared_prefill_off(manifest, tiny_model_path, tmp_path) -> None:
    """The rollout samples without dropout, the policy pass trains with it: no sharing."""
    lora = {**LORA, "lora_dropout": 0.1}
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "run", lora=lora)
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    assert not trainer.shares_prefill
    assert trainer.rollout(trainer.train_dataset[0]).prefix is None


def test_gradient_checkpointing_and_bf16_autocast(
    manifest, tiny_model_path, tmp_path, fresh_accelerator_state
) -> None:
    """Gradient checkpointing gives the loss and gradients of the plain run (log-probs from
    full forwards, a checkpointed forward keeps no cache); bf16 autocast runs a step."""
    results = []
    for checkpointing in (False, True):
        config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / str(checkpointing),
                             gradient_checkpointing=checkpointing, beta=0.04)  # fmt: skip
        trainer = GRPOTrainer(config, reward_funcs=[low_ids])
        torch.manual_seed(0)
        rollout = trainer.rollout(trainer.train_dataset[0])
        rollout.advantages = torch.linspace(-1, 1, rollout.rewards.numel())
        trainer.vlm.train()
        loss, _ = trainer.group_loss(rollout, trainer._sizes([rollout]))
        loss.backward()
        grads = [p.grad.clone() for p in trainer.vlm.trainable_parameters() if p.grad is not None]
        results.append((float(loss), grads, rollout.completion_ids))
    (plain_loss, plain_grads, ids), (ckpt_loss, ckpt_grads, ckpt_ids) = results
    assert torch.equal(ids, ckpt_ids)
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-5)
    assert len(plain_grads) == len(ckpt_grads) > 0
    pairs = zip(plain_grads, ckpt_grads, strict=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in pairs)

    fresh_accelerator_state()  # accelerate fixes the precision per process: start anew
    config = make_config(manifest, tiny_model_path("qwen2_5_vl"), tmp_path / "bf16",
                         mixed_precision="bf16")  # fmt: skip
    trainer = GRPOTrainer(config, reward_funcs=[low_ids])
    assert trainer.accelerator.mixed_precision == "bf16"
    record = trainer.step([trainer.train_dataset[0]])
    assert record["loss"] == record["loss"]  # ran, not NaN


def test_box_head_reward_reads_the_head_at_the_box_token(manifest, sft_final, tmp_path) -> None:
    """From an SFT model with a box head: each grounding completion gets the head's box at
    its <|box|> token (appended), equal to a plain full forward's, and the reward is its IoU."""
    from medvl.model.heads.readout import extend_with_reply
    from medvl.train.rewards import box_head_iou_reward

    config = make_config(manifest, sft_final, tmp_path / "run", lora=None,
                         rewards=["box_head"], reward_weights=[1.0])  # fmt: skip
    trainer = GRPOTrainer(config)
    assert trainer.reward_funcs == [box_head_iou_reward]
    vlm = trainer.vlm
    item = next(it for it in trainer.train_dataset if it["sample"].answer_type == "grounding")
    rollout = trainer.rollout(item)
    boxes = rollout.reward_parts["box_head_iou_reward"]
    assert len(boxes) == 4 and all(0.0 <= b <= 1.0 for b in boxes)

    encoded = trainer.encode(item)
    stops = torch.isin(rollout.completion_ids, torch.tensor(vlm._stop_ids))
    got = read_head_boxes(vlm, rollout.inputs, rollout.completion_ids, stops, encoded.context)
    assert all(len(b) == 4 for b in got)
    # The same box from one plain forward over prompt + reply + <|box|>.
    row, stop = rollout.completion_ids[0], stops[0]
    reply = row[: int(stop.nonzero()[0]) if stop.any() else len(row)]
    batch = extend_with_reply(rollout.inputs, reply.cpu(), [vlm._box_id])
    with torch.no_grad():
        vlm.eval()
        hidden = vlm.model(**batch, output_hidden_states=True).hidden_states[-1][0]
    at = int((batch["input_ids"][0] == vlm._box_id).nonzero()[-1])
    want = vlm.heads["box2d"](hidden[at][None])[0].tolist()
    assert got[0] == pytest.approx(want, abs=1e-4)
    expected = box_head_iou_reward(["x"] * 4, box=[item["box"]] * 4, head_box=got)
    assert boxes == pytest.approx(expected, abs=1e-4)


def _grounding_item(trainer: GRPOTrainer) -> dict:
    return next(it for it in trainer.train_dataset if it["sample"].answer_type == "grounding")


def test_box_head_policy_draws_boxes_and_its_loss_is_reinforce(manifest, sft_final, tmp_path):
    """box_head_std > 0: the reward scores boxes drawn around the head's, and the head's
    loss is -Σ A_i log N(a_i; μ, σ²) / n (hand-computed), with a gradient on the head."""
    from medvl.train.rewards import box_head_iou_reward

    sigma = 0.1
    config = make_config(manifest, sft_final, tmp_path / "run", rewards=["box_head"],
                         box_head_std=sigma, beta=0.0)  # fmt: skip
    trainer = GRPOTrainer(config)
    item = _grounding_item(trainer)
    torch.manual_seed(0)
    rollout = trainer.rollout(item)
    assert rollout.box_actions.shape == (4, 4) and bool(rollout.box_present.all())
    drawn = rollout.box_actions.clamp(0, 1)
    boxes = torch.cat([drawn[:, :2].minimum(drawn[:, 2:]), drawn[:, :2].maximum(drawn[:, 2:])], 1)
    want = box_head_iou_reward(["x"] * 4, box=[item["box"]] * 4, head_box=boxes.tolist())
    assert rollout.reward_parts["box_head_iou_reward"] == pytest.approx(want, abs=1e-5)
    assert len(set(want)) > 1  # the draws give the group spread

    stops = torch.isin(rollout.completion_ids, torch.tensor(trainer.vlm._stop_ids))
    encoded = trainer.encode(item)
    means = torch.tensor(read_head_boxes(trainer.vlm, rollout.inputs, rollout.completion_ids,
                                         stops, encoded.context))  # fmt: skip
    rollout.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss = trainer.box_policy_loss(rollout, n_sequences=8)
    log_density = -((rollout.box_actions - means) ** 2).sum(1) / (2 * sigma**2)
    want = float(-(rollout.advantages * log_density).sum() / 8)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-4)
    loss.backward()
    head = trainer.vlm.heads["box2d"]
    out = head.mlp[-1]  # the layers before it get none while it is still at its zero init
    assert out.weight.grad is not None and bool(out.weight.grad.any())


def test_the_box_policy_reads_the_head_on_the_shared_prefill(manifest, sft_final, tmp_path):
    """With a box policy the rollout's prefill also serves the head's reading in the rollout
    and its REINFORCE term in the loss: the scan runs once for the group (four times without
    ``share_prefill``), with the same boxes, loss and gradients."""
    from medvl.train.logprobs import _vlm

    results = []
    for share in (True, False):
        config = make_config(manifest, sft_final, tmp_path / str(share), rewards=["box_head"],
                             box_head_std=0.1, beta=0.0, share_prefill=share)  # fmt: skip
        trainer = GRPOTrainer(config)
        rows: list[int] = []
        visual = _vlm(trainer.vlm.model).model.visual
        visual.patch_embed.register_forward_hook(lambda m, args, out, rows=rows: rows.append(
            args[0].shape[0]))  # fmt: skip
        item = _grounding_item(trainer)
        torch.manual_seed(0)
        rollout = trainer.rollout(item)  # outside `step`: a frozen tower is not memoised here
        rollout.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
        loss, _ = trainer.group_loss(rollout, trainer._sizes([rollout]))
        loss.backward()
        grads = [p.grad.clone() for p in trainer.vlm.trainable_parameters() if p.grad is not None]
        results.append((rollout.box_actions, float(loss.detach()), grads, len(rows)))
    (boxes, loss, grads, passes), (plain_boxes, plain_loss, plain_grads, plain_passes) = results
    assert (passes, plain_passes) == (1, 4)
    assert torch.allclose(boxes, plain_boxes, atol=1e-6)
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    assert len(grads) == len(plain_grads) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, plain_grads, strict=True))


@pytest.mark.parametrize(("sigma", "steps"), [(0.0, 2), (0.1, 15)])
def test_grpo_trains_the_box_head_only_with_a_box_policy(manifest, sft_final, tmp_path, sigma,
                                                         steps):  # fmt: skip
    """One grounding case, the box_head reward: with σ > 0 the head's box moves towards the
    truth over a few steps (IoU up); with σ = 0 the head's weights do not move at all."""
    from medvl.eval.metrics import box_iou

    config = make_config(manifest, sft_final, tmp_path / "run", rewards=["box_head"],
                         box_head_std=sigma, beta=0.0, max_steps=steps, batch_size=1,
                         lr=3e-3)  # fmt: skip
    trainer = GRPOTrainer(config)
    item = _grounding_item(trainer)
    head = trainer.vlm.heads["box2d"]
    before = [p.detach().clone() for p in head.parameters()]

    def iou() -> float:
        rollout = trainer.rollout(item)
        stops = torch.isin(rollout.completion_ids, torch.tensor(trainer.vlm._stop_ids))
        boxes = read_head_boxes(trainer.vlm, rollout.inputs, rollout.completion_ids, stops,
                                trainer.encode(item).context)  # fmt: skip
        return box_iou(boxes[0], item["box"])

    start = iou()
    for _ in range(config.max_steps):
        trainer.step([item])
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, head.parameters(),
                                                                strict=True))  # fmt: skip
    if sigma == 0:
        assert not moved
    else:
        assert moved and iou() > start + 0.05

"""SFT on phantoms with a tiny model: the loss falls, the box head learns, checkpoints are whole,
and a run killed with SIGKILL resumes to exactly the parameters of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medvl.data.dataset import DatasetConfig, MedVLDataset
from medvl.data.manifest import read_manifest, write_manifest
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.model.medvlm import MedVLM
from medvl.scans.boxes import paired_box_iou
from medvl.train.checkpoint import TrainerState
from medvl.train.checkpoint_folders import STATE_FILE, latest_checkpoint, list_checkpoints
from medvl.train.run_folder import remove_stale_tmp
from medvl.train.sft import SFTConfig, SFTTrainer

ACCELERATE_FILES = {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"}


def subset(manifest: Path, name: str, keep) -> Path:
    """A manifest beside ``manifest`` (same relative image paths) of the samples ``keep`` picks."""
    return write_manifest(manifest.with_name(name), [s for s in read_manifest(manifest) if keep(s)])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sft-data")
    train = generate_phantom_dataset(root / "train", n=4, seed=0, modalities=("fundus", "chest"),
                                     progress=False)  # fmt: skip
    held = generate_phantom_dataset(root / "held", n=3, seed=1, modalities=("fundus", "chest"),
                                    progress=False)  # fmt: skip
    knee = generate_phantom_dataset(root / "knee", n=1, seed=0, modalities=("knee",),
                                    progress=False)  # fmt: skip
    grounding = lambda s: s.answer_type == "grounding"  # noqa: E731
    # Mixed 2D + 3D set for the LoRA resume: copy the knee case beside the 2D ones.
    shutil.copytree(root / "knee" / "knee-000000", root / "train" / "knee-000000")
    knee_samples = [s for s in read_manifest(knee) if s.answer_type in ("grounding", "severity")]
    two_d = [s for s in read_manifest(train) if s.answer_type in ("grounding", "severity")][:3]
    mixed = write_manifest(root / "train" / "mixed.jsonl", two_d + knee_samples)
    return {
        "grounding": subset(train, "grounding.jsonl", grounding),  # 8 samples
        "held_grounding": subset(held, "grounding.jsonl", grounding),  # 6 samples
        "mixed": mixed,  # 3 x 2D, 2 x 3D knee (a 3D box among them)
    }


@pytest.fixture(scope="module")
def trained(data, tiny_model_path, tmp_path_factory) -> SFTTrainer:
    """30 steps of full fine-tuning with a box head on 8 grounding samples, lr 1e-3."""
    config = SFTConfig(
        model=str(tiny_model_path("qwen2_5_vl", "tiny")),
        train_manifest=str(data["grounding"]), eval_manifest=str(data["held_grounding"]),
        dataset=DatasetConfig(size=32), output_dir=str(tmp_path_factory.mktemp("sft") / "run"),
        heads=["box"], lr=1e-3, lr_scheduler="constant", max_steps=30, batch_size=2,
        save_every=10, keep_last=2, log_every=1, eval_every=15, seed=0, progress=False,
        report_to="tensorboard",
    )  # fmt: skip
    trainer = SFTTrainer(config)
    trainer.final_dir = trainer.train()
    return trainer


def test_sft_lowers_the_loss(trained: SFTTrainer) -> None:
    losses = [r["loss"] for r in trained.history if "loss" in r]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"loss: mean of steps 1-5 {first:.4f} -> steps 26-30 {last:.4f}")
    assert last < 0.9 * first
    evals = [r for r in trained.history if "eval_loss" in r]
    assert [r["step"] for r in evals] == [15, 30]
    assert all(r["eval_box_loss"] > 0 for r in evals)


def test_output_folder_and_checkpoint_contents(trained: SFTTrainer) -> None:
    out = Path(trained.config.output_dir)
    assert SFTConfig.from_yaml(out / "config.yaml") == trained.config
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-20", "checkpoint-30"]  # keep 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert list((out / "sft").glob("events.out.tfevents*"))  # TensorBoard through accelerate
    ckpt = out / "checkpoint-30"
    names = {p.name for p in ckpt.iterdir()}
    assert {"config.yaml", STATE_FILE, "accelerate", "medvl_config.json", "heads.safetensors",
            "model.safetensors", "config.json", "tokenizer.json"} <= names  # fmt: skip
    assert {p.name for p in (ckpt / "accelerate").iterdir()} >= ACCELERATE_FILES
    state = TrainerState.from_json((ckpt / STATE_FILE).read_text())
    # 4 batches an epoch: step 30 is the 2nd batch of epoch 7.
    assert (state.global_step, state.epoch, state.batches_in_epoch) == (30, 7, 2)
    assert SFTConfig.from_yaml(ckpt / "config.yaml") == trained.config
    # The accelerate copy holds exactly the trainable parameters, in float32.
    model = trained.accelerator.unwrap_model(trained.model)
    saved = load_file(ckpt / "accelerate" / "model.safetensors")
    assert saved.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(v.dtype == torch.float32 for v in saved.values())
    # The checkpoint and final/ load as models on their own.
    for folder in (ckpt, trained.final_dir):
        loaded = MedVLM.from_pretrained(folder)
        assert loaded.config.heads is not None and "box2d" in loaded.heads


def test_box_head_beats_an_untrained_head(trained: SFTTrainer, data, tiny_model_path) -> None:
    held = MedVLDataset(data["held_grounding"], DatasetConfig(size=32))
    items = [held[i] for i in range(len(held))]

    def mean_iou(model: MedVLM) -> float:
        model.eval()
        with torch.no_grad():
            batch = model.collate(items)
            out = model(**batch)
        return float(paired_box_iou(out.boxes[:, :4], batch["box_targets"][:, :4]).mean())

    torch.manual_seed(0)
    untrained = MedVLM.from_pretrained(tiny_model_path("qwen2_5_vl", "tiny"), heads=["box"])
    before, after = mean_iou(untrained), mean_iou(MedVLM.from_pretrained(trained.final_dir))
    print(f"held-out box IoU: untrained head {before:.3f} -> after SFT {after:.3f}")
    assert after > before + 0.05


def test_failed_checkpoint_leaves_no_half_folder(data, tiny_model_path, tmp_path) -> None:
    config = SFTConfig(
        model=str(tiny_model_path("qwen2_5_vl", "tiny")), train_manifest=str(data["grounding"]),
        dataset=DatasetConfig(size=32), output_dir=str(tmp_path / "run"), max_steps=3,
        max_train_samples=2, save_every=1, keep_last=None, lr=1e-3, log_every=1, report_to="none",
        progress=False,
    )  # fmt: skip
    trainer = SFTTrainer(config)
    model = trainer.accelerator.unwrap_model(trainer.model)
    calls = []

    def save_then_fail(folder):  # writes the model files into the staging folder, then dies
        calls.append(folder)
        MedVLM.save_pretrained(model, folder)
        if len(calls) == 2:
            raise OSError("disk full (injected)")

    model.save_pretrained = save_then_fail
    with pytest.raises(OSError, match="injected"):
        trainer.train()
    out = tmp_path / "run"
    left = sorted(p.name for p in out.iterdir())
    assert left == ["checkpoint-1", "config.yaml", "train_log.jsonl"]  # no checkpoint-2, no tmp
    assert {p.name for p in (out / "checkpoint-1" / "accelerate").iterdir()} >= ACCELERATE_FILES

    # A SIGKILL mid-write leaves a hidden staging folder: ignored, then removed on restart.
    (out / ".tmp-checkpoint-2" / "accelerate").mkdir(parents=True)
    (out / "checkpoint-9").mkdir()  # not ours and without trainer_state.json: not a checkpoint
    assert latest_checkpoint(out) == out / "checkpoint-1"
    remove_stale_tmp(out)
    assert not (out / ".tmp-checkpoint-2").exists()
    shutil.rmtree(out / "checkpoint-9")

    resumed = SFTTrainer(config.replace(resume_from="latest")).train()
    assert resumed.is_dir()
    assert [p.name for p in list_checkpoints(out)] == [f"checkpoint-{i}" for i in (1, 2, 3)]
    assert [r["step"] for r in map(yaml.safe_load, (out / "train_log.jsonl").open())] == [1, 2, 3]


# -- SIGKILL and resume, in real processes ------------------------------------------------------


def _launch(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medvl.train.sft", "--config", str(config), *extra]
    # One thread each: two runs share the CI's cores without oversubscribing them, and every
    # run reduces in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _trainable(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "accelerate" / "model.safetensors")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sigkill_and_resume_matches_uninterrupted_run(
    lora: bool, data, tiny_model_path, tmp_path: Path
) -> None:
    n, kill_after = 6, 2
    base = {
        "model": str(tiny_model_path("qwen2_5_vl", "tiny")),
        "train_manifest": str(data["mixed" if lora else "grounding"]),
        "dataset": {"size": 32, "n_frames": 2},
        "max_train_samples": 5,  # 5 micro-batches per epoch, 2 per step: epochs end mid-step
        "heads": ["box"], "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1} if lora else None,
        "lr": 5e-3, "warmup_steps": 2, "lr_scheduler": "cosine", "max_steps": n,
        "batch_size": 1, "gradient_accumulation_steps": 2, "save_every": 2, "keep_last": None,
        "log_every": 1, "seed": 3, "report_to": "none", "progress": False,
    }  # fmt: skip
    configs = {}
    for name in ("reference", "killed"):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / name)}))

    reference = _launch(configs["reference"], tmp_path / "reference.log")
    killed = _launch(configs["killed"], tmp_path / "killed.log")
    marker = tmp_path / "killed" / f"checkpoint-{kill_after}" / STATE_FILE
    deadline = time.monotonic() + 240
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before it was killed"
    assert reference.wait(timeout=240) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    resumed_from = latest_checkpoint(tmp_path / "killed")
    assert kill_after <= int(resumed_from.name.split("-")[1]) < n

    resumed = _launch(configs["killed"], tmp_path / "resumed.log", "--resume")
    assert resumed.wait(timeout=240) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert f"resumed from {resumed_from}" in (tmp_path / "resumed.log").read_text()

    want = _trainable(tmp_path / "reference" / f"checkpoint-{n}")
    got = _trainable(tmp_path / "killed" / f"checkpoint-{n}")
    assert want.keys() == got.keys()
    if lora:
        assert any("lora_A" in k for k in want) and not any("visual" in k for k in want)
    diff = max(float((want[k] - got[k]).abs().max()) for k in want)
    mode = "lora" if lora else "full"
    print(f"{mode}: killed after {resumed_from.name}, max |diff| at step {n} = {diff:.3g}")
    for key in want:
        assert torch.allclose(want[key], got[key], atol=1e-6, rtol=0), key
    # The log of the resumed run replays the reference's losses, each step once.
    logs = [
        [yaml.safe_load(line) for line in (tmp_path / run / "train_log.jsonl").open()]
        for run in ("reference", "killed")
    ]
    assert [r["step"] for r in logs[1]] == list(range(1, n + 1))
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], abs=1e-6)
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]


def test_two_processes_write_once_and_resume_exactly(data, tiny_model_path, tmp_path: Path) -> None:
    """``torchrun`` with 2 CPU processes (gloo DDP): one log, one checkpoint per step with each
    rank's RNG state, an eval loss gathered over uneven shards, and an exact resume."""
    n = 4
    config = {
        "model": str(tiny_model_path("qwen2_5_vl", "tiny")),
        "train_manifest": str(data["mixed"]), "eval_manifest": str(data["mixed"]),
        "dataset": {"size": 32, "n_frames": 2}, "max_eval_samples": 3, "heads": ["box"],
        "lr": 5e-3, "max_steps": n, "batch_size": 1, "gradient_accumulation_steps": 2,
        "save_every": 2, "keep_last": None, "log_every": 1, "eval_every": 2, "seed": 1,
        "report_to": "none", "progress": False,
    }  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}

    def torchrun(name: str, *extra: str) -> Path:
        out = tmp_path / name
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**config, "output_dir": str(out)}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "medvl.train.sft",
               "--config", str(tmp_path / f"{name}.yaml"), *extra]  # fmt: skip
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        return out

    whole = torchrun("whole")
    log = [yaml.safe_load(line) for line in (whole / "train_log.jsonl").open()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, n + 1))  # main process only
    assert [r["step"] for r in log if "eval_loss" in r] == [2, 4]
    accelerate_files = {p.name for p in (whole / f"checkpoint-{n}" / "accelerate").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= accelerate_files

    (tmp_path / "resumed").mkdir()
    shutil.copytree(whole / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = torchrun("resumed", "--resume")
    want, got = _trainable(whole / f"checkpoint-{n}"), _trainable(resumed / f"checkpoint-{n}")
    diff = max(float((want[k] - got[k]).abs().max()) for k in want)
    print(f"2-process DDP: resumed from checkpoint-2, max |diff| at step {n} = {diff:.3g}")
    assert want.keys() == got.keys() and diff <= 1e-6

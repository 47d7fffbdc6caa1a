"""The runner as real processes: SIGKILL mid-run then resume, two ranks under torchrun, and
several models in one config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.eval.predictions import read_predictions
from medvl.eval.runner import EvalConfig, run_eval


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    return generate_phantom_dataset(out, n=1, modalities=("chest", "fundus"), progress=False)


def _config(tmp_path: Path, manifest: Path, model: Path, name: str, **kw) -> Path:
    config = {"model": str(model), "manifest": str(manifest), "batch_size": 1,
              "max_new_tokens": 24, "n_frames": 2, "progress": False,
              "reasoning_matcher": "none", "output": str(tmp_path / f"{name}.jsonl"),
              **kw}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def _eval_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "medvl.cli", "eval", "--config", str(config)]


def _answers(path: Path) -> dict[str, str]:
    return {r["id"]: r["output"] for r in read_predictions(path)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, manifest, tiny_model_path: Callable[..., Path]) -> dict:
    """An uninterrupted single-process run: what every other way must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    model = tiny_model_path("qwen2_5_vl")
    run = subprocess.run(_eval_cmd(_config(tmp, manifest, model, "whole")), env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return {"model": model, "answers": _answers(tmp / "whole.jsonl")}


def test_sigkill_mid_run_loses_only_the_batch_in_flight(tmp_path, manifest, reference):
    config = _config(tmp_path, manifest, reference["model"], "killed")
    out = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(_eval_cmd(config), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text(encoding="utf-8").splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = read_predictions(out, repair=True)  # a line cut mid-write is dropped
    assert 3 <= len(before) < len(reference["answers"])
    resumed = subprocess.run(_eval_cmd(config), env=_env(), capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = [r["id"] for r in read_predictions(out)]
    assert len(ids) == len(set(ids)) == len(reference["answers"])  # each sample once
    assert _answers(out) == reference["answers"]  # the same answers as the whole run


def test_two_processes_split_the_work_and_merge(tmp_path, manifest, reference):
    config = _config(tmp_path, manifest, reference["model"], "two")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "medvl.cli", "eval", "--config", str(config)]  # fmt: skip
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = tmp_path / "two.jsonl"
    assert not list(tmp_path.glob("two.rank*"))  # shards merged and removed
    rows = read_predictions(out)
    assert [r["id"] for r in rows] == list(reference["answers"])  # manifest order, each once
    assert _answers(out) == reference["answers"]
    assert run.stdout.count('"predictions"') == 1  # one summary, from the main process


def test_several_models_in_one_config(tmp_path, manifest, reference):
    config = _config(tmp_path, manifest, reference["model"], "many", max_samples=2,
                     output=str(tmp_path / "{name}.jsonl"))  # fmt: skip
    data = yaml.safe_load(config.read_text())
    data["models"] = [data.pop("model"), "tiny:qwen2_vl-tiny"]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    run_eval(config)
    first = EvalConfig.from_yaml(config).each_model()[0].output_path
    second = tmp_path / "tiny_qwen2_vl-tiny.jsonl"
    assert [r["model"] for r in read_predictions(second)] == ["tiny:qwen2_vl-tiny"] * 2
    assert len(read_predictions(first)) == 2 and first != second
    with pytest.raises(ValueError, match="must hold"):
        EvalConfig(models=["a", "b"], manifest="m.jsonl", output="one.jsonl")
    with pytest.raises(ValueError, match="not both"):
        EvalConfig(model="a", models=["b"], manifest="m.jsonl")
    assert json.loads(json.dumps(data))["models"][1] == "tiny:qwen2_vl-tiny"

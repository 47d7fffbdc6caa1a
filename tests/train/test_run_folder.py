"""medvl.train.run_folder: a run's folder, its training log and its final model."""

from __future__ import annotations

import json

import pytest
from accelerate import Accelerator

from medvl.train.run_folder import (
    LOG_FILE,
    append_log,
    remove_stale_tmp,
    save_final,
    start_run,
    truncate_log,
)
from medvl.train.sft import SFTConfig


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def test_start_run_clears_crash_leftovers_and_saves_the_config(tmp_path, accelerator):
    out = tmp_path / "run"
    for stale in (".tmp-checkpoint-4", ".checkpoint-2.old-ab12", ".final.tmp-x1"):
        (out / stale).mkdir(parents=True)
    (out / "checkpoint-2").mkdir()
    config = SFTConfig(train_manifest="m.jsonl", output_dir=str(out), lr=3e-4)
    assert start_run(accelerator, config, out) is None  # nothing to resume
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "config.yaml"]
    assert SFTConfig.from_yaml(out / "config.yaml").lr == 3e-4


def test_the_log_is_appended_then_cut_back_to_a_resumed_step(tmp_path, accelerator):
    for step in (1, 2, 3, 4):
        append_log(accelerator, tmp_path, {"step": step, "loss": 1.0 / step})
    truncate_log(tmp_path / LOG_FILE, 2)
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_a_failed_final_write_leaves_no_folder(tmp_path, accelerator):
    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_final(accelerator, tmp_path, broken)
    assert list(tmp_path.iterdir()) == []
    final = save_final(accelerator, tmp_path, lambda f: (f / "model.bin").write_bytes(b"ok"))
    assert final == tmp_path / "final" and (final / "model.bin").read_bytes() == b"ok"
    remove_stale_tmp(tmp_path)  # a finished run has nothing stale to remove
    assert [p.name for p in tmp_path.iterdir()] == ["final"]

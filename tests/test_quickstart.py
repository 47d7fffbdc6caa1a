"""The quickstart runs end to end: real bundled scans, then phantoms -> SFT -> GRPO -> tests."""

from __future__ import annotations

import re

import torch
from safetensors.torch import load_file

from medvl.cli import main
from medvl.quickstart import run_quickstart
from medvl.scans.examples import example_scans


def test_quickstart_tour_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    result = run_quickstart(family="qwen3_vl", size="tiny", n_frames=4, max_new_tokens=4,
                            sft_steps=0, grpo_steps=0, out_dir=tmp_path / "run")  # fmt: skip
    rows = result.scans
    assert [r["name"] for r in rows] == list(example_scans())
    assert all(r["vision_tokens"] > 0 for r in rows)
    volumes = [r for r in rows if r["shape"].count("x") == 2]
    assert volumes, "at least one bundled scan is a volume shown as video frames"
    assert "vision tokens" in capsys.readouterr().out
    assert result.stages is None


def test_quickstart_fast_runs_every_stage_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code = main(["quickstart", "--fast", "--size", "tiny", "--frames", "4",
                 "--max-new-tokens", "4", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    # Part two: SFT with a box head on all three kinds, then GRPO, then the held-out tables.
    run = out / "sft_then_grpo"
    assert (run / "sft_stage" / "sft" / "final" / "heads.safetensors").is_file()
    assert re.search(r"SFT's loss on the validation cases at its end: \d+\.\d{3}", printed)
    for kind in ("closed", "severity", "grounding"):
        table = printed.split(f"\n{kind} questions:\n")[1]
        for stage in ("base", "sft", "grpo"):
            assert re.search(rf"^\| {stage} \| \d+ \| \d\.\d{{3}} \[", table, re.M), (kind, stage)
    assert "mean IoU [95% CI]" in printed.split("\ngrounding questions:\n")[1]
    assert re.search(r"grpo − sft: [+-]\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]", printed)
    for kind in ("closed", "severity"):
        assert re.search(rf"^{kind}: SFT \d\.\d\d, GRPO \d\.\d\d .*: GRPO", printed, re.M)
    assert "rewards format, accuracy, box_head, severity" in printed
    assert re.search(r"^grounding: mean IoU SFT \d\.\d\d, GRPO \d\.\d\d", printed, re.M)
    boxes = re.findall(r"- (\w+)-\S+: GRPO's box \[.*\] \(from the head\), truth \[.*\], "
                       r"IoU \d\.\d\d", printed)  # fmt: skip
    assert set(boxes) == {"fundus", "knee"}
    html = run / "report" / "report.html"
    assert html.is_file() and f"worst cases drawn): {html}" in printed
    grpo = run / "grpo" / "final"
    assert (grpo / "heads.safetensors").is_file()
    # GRPO trained the box head as a policy: its weights left SFT's.
    sft_head = load_file(run / "sft_stage" / "sft" / "final" / "heads.safetensors")
    grpo_head = load_file(grpo / "heads.safetensors")
    assert any(not torch.equal(sft_head[k], grpo_head[k]) for k in sft_head)
    assert f"medvl demo --model {grpo}" in printed

"""The quickstart runs end to end: real bundled scans, then SFT on phantoms (tiny model)."""

from __future__ import annotations

import pytest

from medvl.quickstart import run_quickstart
from medvl.scans.examples import example_scans


@pytest.mark.parametrize(("family", "sft_steps"), [("qwen2_5_vl", 3), ("qwen3_vl", 0)])
def test_quickstart_runs_end_to_end(family, sft_steps, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    result = run_quickstart(family=family, size="tiny", n_frames=4, max_new_tokens=4,
                            sft_steps=sft_steps, out_dir=tmp_path / "run",
                            reading_steps=2 if sft_steps else 0, reading_cases=12)  # fmt: skip
    rows = result.scans
    assert [r["name"] for r in rows] == list(example_scans())
    assert all(r["vision_tokens"] > 0 for r in rows)
    volumes = [r for r in rows if r["shape"].count("x") == 2]
    assert volumes, "at least one bundled scan is a volume shown as video frames"
    out = capsys.readouterr().out
    assert "vision tokens" in out
    if sft_steps:
        assert (result.checkpoint / "heads.safetensors").is_file()
        assert len(result.losses) >= 2
        # One grounding question per held-out phantom kind, each with a box from the head.
        assert {g["anatomy"] for g in result.grounding} == {"chest", "fundus", "knee"}
        for g in result.grounding:
            assert len(g["box"]) == len(g["truth"]) and 0.0 <= g["iou"] <= 1.0
        assert "mean IoU" in out and result.report.name == "report.md" and result.report.is_file()
        # Part three prints learning: own against swapped scans (whether it learned in 2 steps
        # is tests/test_experiments.py's business).
        (row,) = result.learning.rows
        assert row.answer_type == "closed" and row.swapped is not None
        assert "with swapped scans" in out and "| closed |" in out
    else:
        assert result.checkpoint is None and not result.grounding and result.learning is None

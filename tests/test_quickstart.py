"""The quickstart runs end to end on the bundled real scans (tiny model to keep it quick)."""

from __future__ import annotations

import pytest

from medvl.quickstart import run_quickstart
from medvl.scans.examples import example_scans


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_quickstart_answers_every_bundled_scan(family, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path))
    rows = run_quickstart(family=family, size="tiny", n_frames=4, max_new_tokens=4)
    assert [r["name"] for r in rows] == list(example_scans())
    assert all(r["vision_tokens"] > 0 for r in rows)
    volumes = [r for r in rows if r["shape"].count("x") == 2]
    assert volumes, "at least one bundled scan is a volume shown as video frames"
    out = capsys.readouterr().out
    assert "vision tokens" in out and "done:" in out

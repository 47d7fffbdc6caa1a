"""medvl compare: two runs on their common samples."""

from __future__ import annotations

import json
from math import comb

import pytest

from medvl.cli import main
from medvl.eval.compare import compare_runs


def _write(path, model, right_ids, ids=range(20)):
    rows = [{"id": f"s{i}", "model": model, "answer_type": "closed", "correct": i in right_ids}
            for i in ids]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_compare_by_hand(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", "base", set(range(10)))
    # B has 5 more samples that A lacks: only the 20 common ones count.
    b = _write(tmp_path / "b.jsonl", "tuned", set(range(5, 25)), ids=range(25))
    text = compare_runs(a, b, names=["base", "tuned"])
    assert text.startswith("20 common samples (20 in A, 25 in B)")
    assert "accuracy      0.500" in text and "accuracy      0.750" in text
    # Discordant pairs: B right / A wrong on 10-19 (10), A right / B wrong on 0-4 (5):
    # exact McNemar, p = 2 P(X <= 5), X ~ Binomial(15, 1/2).
    p = 2 * sum(comb(15, k) for k in range(6)) / 2**15
    assert "+0.250 [" in text and f"p={p:.3f}" in text
    assert main(["compare", str(a), str(tmp_path), "--names", "x", "y"]) == 2  # no folder file
    assert "predictions" in capsys.readouterr().err
    assert main(["compare", str(a), str(b)]) == 0
    assert "B − A" in capsys.readouterr().out


def test_compare_without_common_ids(tmp_path):
    a = _write(tmp_path / "a.jsonl", "m", set(), ids=range(3))
    b = _write(tmp_path / "b.jsonl", "m", set(), ids=range(3, 6))
    with pytest.raises(ValueError, match="share no sample id"):
        compare_runs(a, b)

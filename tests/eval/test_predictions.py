"""medvl.eval.predictions: the one prediction-file reader."""

from __future__ import annotations

import json

import pytest

from medvl.eval.predictions import PredictionFileError, read_predictions


def _line(i: int, **extra) -> str:
    return json.dumps({"id": f"s{i}", "model": "m", "correct": i % 2 == 0, **extra})


def test_a_missing_file_reads_as_no_predictions(tmp_path):
    assert read_predictions(tmp_path / "none.jsonl") == []


def test_repair_cuts_a_truncated_last_line_so_appending_goes_on(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(0) + "\n\n" + _line(1) + "\n" + '{"id": "s2", "mod')
    with pytest.warns(RuntimeWarning, match=r"p\.jsonl:4: dropping a truncated last line"):
        rows = read_predictions(path, repair=True)
    assert [r["id"] for r in rows] == ["s0", "s1"]
    assert path.read_text() == _line(0) + "\n\n" + _line(1) + "\n"


def test_repair_ends_a_complete_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(0) + "\n" + _line(1))
    assert len(read_predictions(path, repair=True)) == 2
    assert path.read_text().endswith(_line(1) + "\n")


def test_a_repeated_id_keeps_the_first_record(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(0, answer="first") + "\n" + _line(0, answer="second") + "\n")
    with pytest.warns(UserWarning, match="1 repeated id"):
        rows = read_predictions(path)
    assert [r["answer"] for r in rows] == ["first"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", r"p\.jsonl:2: damaged line, expected a JSON object"),
        ('{"model": "m"}', r"p\.jsonl:2: missing required key\(s\) id, correct"),
        ('{"id": "x", "correct": "yes"}', r"p\.jsonl:2: 'correct' must be true, false or null"),
    ],
)
def test_bad_records_name_the_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(_line(0) + "\n" + line + "\n" + _line(1) + "\n")
    with pytest.raises(PredictionFileError, match=message):
        read_predictions(path, required=("correct",))

"""The worst-case gallery: ordering, pictures with both boxes drawn, report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medvl.data import read_manifest
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.eval.gallery import PRED_COLOUR, TRUE_COLOUR, case_picture, worst_cases
from medvl.eval.report import make_report


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    return generate_phantom_dataset(out, n=1, modalities=("chest", "knee"), progress=False)


def _has(picture, colour) -> bool:
    return bool(np.all(np.asarray(picture) == colour, axis=-1).any())


def test_worst_cases_order():
    rows = [{"id": "right", "correct": True}, {"id": "grounding-good", "correct": None,
            "iou": 0.9}, {"id": "wrong", "correct": False}, {"id": "grounding-bad",
            "correct": None, "iou": 0.1}, {"id": "wrong-weak", "correct": False,
            "reasoning_f1": 0.2}]  # fmt: skip
    assert [r["id"] for r in worst_cases(rows, 4)] == [
        "wrong-weak", "wrong", "grounding-bad", "grounding-good"]  # fmt: skip
    assert worst_cases(rows, 0) == []


@pytest.mark.parametrize("anatomy", ["chest", "knee"])
def test_case_picture_draws_both_boxes(phantoms: Path, anatomy: str):
    sample = next(s for s in read_manifest(phantoms)
                  if s.anatomy == anatomy and s.answer_type == "grounding")  # fmt: skip
    path = sample.image_paths(phantoms.parent)[0]
    true = list(sample.box)
    half = len(true) // 2
    # A predicted box shifted by a third of the reference's size along x.
    shift = (true[half] - true[0]) / 3
    pred = [v + shift if i % half == 0 else v for i, v in enumerate(true)]
    picture = case_picture(path, true, pred, size=256)
    assert max(picture.size) == 256 or anatomy == "knee"  # a volume's slice keeps its aspect
    assert _has(picture, TRUE_COLOUR) and _has(picture, PRED_COLOUR)
    assert not _has(case_picture(path, true, None), PRED_COLOUR)
    # A box of the wrong dimensionality is not drawn.
    wrong = [0.1, 0.1, 0.5, 0.5] if half == 3 else [0.1, 0.1, 0.1, 0.5, 0.5, 0.5]
    assert not _has(case_picture(path, None, wrong), PRED_COLOUR)


def test_report_html_is_self_contained_with_a_gallery(phantoms: Path, tmp_path: Path):
    samples = [s for s in read_manifest(phantoms) if s.answer_type == "grounding"]
    rows = []
    for i, s in enumerate(samples):
        rows.append({"id": s.id, "model": "m", "answer_type": "grounding", "correct": i == 0,
                     "iou": 0.9 if i == 0 else 0.0, "image": s.image, "question": s.question,
                     "reference_box": s.box, "box": s.box if i == 0 else None,
                     "answer": "here", "reference": s.answer,
                     "reasoning": "I <look> & see"})  # fmt: skip
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # As `evaluate` leaves it: the config beside the predictions names the manifest.
    (tmp_path / "p.jsonl.config.yaml").write_text(f"manifest: {phantoms}\n", encoding="utf-8")
    make_report([preds], tmp_path / "out", gallery=5)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<table>" in page and "Worst cases" in page
    assert not re.search(r'src="(?!data:)', page)  # every picture inlined
    cards = re.findall(r'<figure class="case (\w[\w-]*)">', page)
    assert cards == ["wrong"] * (len(rows) - 1) + ["right"]  # worst first
    assert page.count('src="data:image/png;base64,') >= len(rows) + 1  # scans and a plot
    assert "I &lt;look&gt; &amp; see" in page  # model text is escaped
    # Without a way to find the scans, the cards keep their text and say so.
    (tmp_path / "p.jsonl.config.yaml").unlink()
    make_report([preds], tmp_path / "bare", gallery=2, image_root=tmp_path / "nowhere")
    bare = (tmp_path / "bare" / "report.html").read_text(encoding="utf-8")
    assert bare.count('class="missing"') == 2 and "Locate" in bare

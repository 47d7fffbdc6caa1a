"""medvl.eval.report: reading prediction files, numbers checked by hand, plots, atomicity."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from medvl.eval.predictions import PredictionFileError, read_predictions
from medvl.eval.report import make_report

Z = 1.959963984540054  # two-sided 95% normal quantile


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval written out by hand (independent of scipy)."""
    p = k / n
    denom = 1 + Z**2 / n
    centre = (p + Z**2 / (2 * n)) / denom
    half = Z / denom * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n))
    return centre - half, centre + half


def _rows(model: str) -> list[dict]:
    """60 samples: 0-19 choice, 20-39 closed, 40-59 grounding; even ids MRI, odd ids CT.

    A: choice 18/20, closed 12/20 (ids 20-31), grounding 14/20 (IoU 0.7 on 40-53, else 0.2).
    B: choice 10/20, closed 12/20 (ids 28-39), grounding 10/20 (IoU 0.55 on 40-49, else 0.1).
    """
    rows = []
    for i in range(60):
        if i < 20:
            kind, iou = "choice", None
            ok = i < (18 if model == "A" else 10)
        elif i < 40:
            kind, iou = "closed", None
            ok = 20 <= i < 32 if model == "A" else 28 <= i < 40
        else:
            kind = "grounding"
            iou = (0.7 if i < 54 else 0.2) if model == "A" else (0.55 if i < 50 else 0.1)
            ok = iou >= 0.5
        row = {
            "id": f"s{i:02d}", "model": model, "output": "<answer>x</answer>", "answer": "x",
            "box": None, "correct": ok, "answer_type": kind,
            "modality": "MRI" if i % 2 == 0 else "CT", "anatomy": "knee", "split": "test",
            "reference": "x", "well_formed": i % 10 != 0, "latency_s": 0.5 if model == "A" else 1.0,
            "tokens": 20,
        }  # fmt: skip
        if iou is not None:
            row["iou"] = iou
            row["dice"] = 2 * iou / (1 + iou)
            row["hd95"] = 3.0
        rows.append(row)
    return rows


def _write(path, rows, tail: str = ""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_model_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    a = _write(d / "a.jsonl", _rows("A"))
    b = _write(d / "b.jsonl", _rows("B"))
    report = make_report([a, b], d / "out")
    return report, json.loads((d / "out" / "summary.json").read_text())


def _acc(k, n):
    lo, hi = _wilson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})"


def test_accuracy_numbers_match_hand_computation(two_model_report):
    report, summary = two_model_report
    text = report.read_text()
    # overall: A 18+12+14 = 44/60, B 10+12+10 = 32/60
    assert _acc(44, 60) in text and _acc(32, 60) in text
    for kind, ka, kb in (("choice", 18, 10), ("closed", 12, 12), ("grounding", 14, 10)):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {kind} |"))
        assert line == f"| {kind} | {_acc(ka, 20)} | {_acc(kb, 20)} |"
    # per modality, counted from the same rows
    for mod in ("MRI", "CT"):
        for model in ("A", "B"):
            rows = [r for r in _rows(model) if r["modality"] == mod]
            k = sum(r["correct"] for r in rows)
            cell = summary["models"][model]["accuracy_by_modality"][mod]
            assert (cell["successes"], cell["n"]) == (k, len(rows))
            assert cell["low"] == pytest.approx(_wilson(k, len(rows))[0], abs=1e-9)
            assert _acc(k, len(rows)) in text

    a = summary["models"]["A"]
    assert a["accuracy"]["estimate"] == pytest.approx(44 / 60)
    assert (a["accuracy"]["low"], a["accuracy"]["high"]) == pytest.approx(_wilson(44, 60))
    assert a["accuracy_by_answer_type"]["choice"]["estimate"] == pytest.approx(0.9)
    assert a["format_rate"]["successes"] == 54
    assert a["latency_s"]["mean"] == pytest.approx(0.5)
    assert a["tokens"]["mean"] == pytest.approx(20)
    assert a["iou"]["estimate"] == pytest.approx((14 * 0.7 + 6 * 0.2) / 20)
    assert a["iou"]["low"] < a["iou"]["estimate"] < a["iou"]["high"]
    assert a["iou"]["n"] == 20
    assert a["hd95"] == {"median": 3.0, "n": 20}
    assert summary["models"]["B"]["iou"]["estimate"] == pytest.approx((10 * 0.55 + 10 * 0.1) / 20)


def test_mcnemar_line_matches_hand_computation(two_model_report):
    report, summary = two_model_report
    # discordant pairs: only A right 8 (choice) + 8 (closed 20-27) + 4 (grounding 50-53) = 20,
    # only B right 8 (closed 32-39): 28 >= 25 -> chi-square with continuity correction.
    chi2 = (abs(20 - 8) - 1) ** 2 / 28
    p = math.erfc(math.sqrt(chi2 / 2))  # chi-square survival function, 1 degree of freedom
    (cmp,) = summary["comparisons"]
    assert cmp["model"] == "B" and cmp["reference"] == "A" and cmp["common_ids"] == 60
    acc = cmp["accuracy"]
    assert acc["method"] == "mcnemar chi2" and acc["n"] == 60
    assert acc["difference"] == pytest.approx((32 - 44) / 60)
    assert acc["p_value"] == pytest.approx(p, rel=1e-9)
    text = report.read_text()
    assert "## Paired comparisons against A" in text
    ci = f"[{acc['low']:+.3f}, {acc['high']:+.3f}]"
    assert f"| B | accuracy | -0.200 | {ci} | {p:.3f} | mcnemar chi2 | 60 | 60 |" in text
    iou = cmp["iou"]
    assert iou["method"] == "paired bootstrap" and iou["n"] == 20
    assert iou["difference"] == pytest.approx(0.325 - 0.55)  # B mean - A mean
    assert "| B | IoU mean | -0.225 |" in text


def test_plots_are_valid_images_and_embedded(two_model_report):
    from PIL import Image

    report, summary = two_model_report
    text = report.read_text()
    for name in ("accuracy_by_answer_type.png", "accuracy_by_modality.png", "iou.png",
                 "dice.png"):
        path = report.parent / name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 200
            assert len(set(im.convert("L").getdata())) > 10  # not a blank canvas
        assert f"]({name})" in text
    assert sorted(summary["plots"].values()) == [
        "accuracy_by_answer_type.png",
        "accuracy_by_modality.png",
        "dice.png",
        "iou.png",
    ]  # no reasoning in these rows: no reasoning-length plot
    # no temporary files left behind
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]


def test_deterministic(tmp_path, two_model_report):
    _, summary = two_model_report
    a = _write(tmp_path / "a.jsonl", _rows("A"))
    b = _write(tmp_path / "b.jsonl", _rows("B"))
    make_report([a, b], tmp_path / "out")
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    again["models"]["A"]["file"] = summary["models"]["A"]["file"]
    again["models"]["B"]["file"] = summary["models"]["B"]["file"]
    assert again == summary


def test_truncated_last_line_is_skipped(tmp_path):
    path = _write(tmp_path / "a.jsonl", _rows("A"), tail='{"id": "s60", "model": "A", "corr')
    with pytest.warns(RuntimeWarning, match=r"a\.jsonl:61: dropping a truncated last line"):
        records = read_predictions(path, required=("model", "correct", "answer_type"))
    assert len(records) == 60


def test_bad_middle_line_is_an_error(tmp_path):
    rows = [json.dumps(r) for r in _rows("A")[:3]]
    path = tmp_path / "a.jsonl"
    path.write_text(rows[0] + "\n{oops\n" + rows[1] + "\n")
    with pytest.raises(PredictionFileError, match=r"a\.jsonl:2: damaged line, invalid JSON"):
        read_predictions(path)


def test_missing_required_key_names_file_and_line(tmp_path):
    rows = _rows("A")[:5]
    del rows[3]["answer_type"]
    path = _write(tmp_path / "preds.jsonl", rows)
    match = r"preds\.jsonl:4: missing required key.*answer_type"
    with pytest.raises(PredictionFileError, match=match):
        make_report([path], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_single_model_has_no_comparison_and_optional_keys_may_be_missing(tmp_path):
    rows = [
        {"id": i, "model": "solo", "correct": i % 3 != 0 if i < 9 else None, "answer_type": "open"}
        for i in range(10)
    ]  # no modality, metrics, latency, ...
    path = _write(tmp_path / "solo.jsonl", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = make_report([path], tmp_path / "out")
    text = report.read_text()
    assert "Paired comparisons" not in text and "mcnemar" not in text
    assert _acc(6, 9) in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["comparisons"] == []
    assert summary["models"]["solo"]["accuracy_by_modality"]["unknown"]["n"] == 9
    assert summary["models"]["solo"]["iou"] is None
    assert "iou" not in summary["plots"] and "No sample has an IoU." in text
    assert (tmp_path / "out" / "accuracy_by_answer_type.png").stat().st_size > 1000


def test_names_and_duplicate_labels(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows("A")[:10])
    a2 = _write(tmp_path / "a2.jsonl", _rows("A")[:10])
    with pytest.raises(ValueError, match="used twice"):
        make_report([a, a2], tmp_path / "out")
    report = make_report([a, a2], tmp_path / "out", names=["base", "tuned"])
    assert "## Paired comparisons against base" in report.read_text()


def test_reasoning_quality_section_matches_hand_computation(tmp_path):
    """Model A's 60 rows get reasoning F1 1.0 on right answers and 0.5 on wrong ones (recall
    0.75, precision 0.5 ... written directly), and a conclusion that agrees on ids < 45."""
    rows = _rows("A")
    for i, r in enumerate(rows):
        right = r["correct"] is True
        r.update(reasoning_recall=1.0 if right else 0.5, reasoning_precision=1.0 if right else 0.5,
                 reasoning_f1=1.0 if right else 0.5, reasoning_order=1.0,
                 reasoning_per_100_tokens=20.0, reasoning_consistent=i < 45)  # fmt: skip
    for r in rows:  # replies with reasoning: longer when right
        r["reasoning"], r["tokens"] = "steps", 120 if r["correct"] else 40
    report = make_report([_write(tmp_path / "a.jsonl", rows)], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["models"]["A"]
    plots = json.loads((tmp_path / "out" / "summary.json").read_text())["plots"]
    assert plots["reasoning_length"] == "reasoning_length.png"
    assert "](reasoning_length.png)" in report.read_text()
    n_right = sum(r["correct"] is True for r in rows)
    assert summary["reasoning_f1"]["estimate"] == pytest.approx(
        (n_right * 1.0 + (60 - n_right) * 0.5) / 60
    )
    assert summary["reasoning_f1_by_correct"]["right"]["estimate"] == 1.0
    assert summary["reasoning_f1_by_correct"]["wrong"]["estimate"] == 0.5
    assert summary["reasoning_consistent"]["successes"] == 45
    text = report.read_text()
    assert "## Reasoning quality" in text
    lo, hi = _wilson(45, 60)
    assert f"0.750 [{lo:.3f}, {hi:.3f}] (45/60)" in text
    # Against a model whose every reasoning F1 is 0.5: the paired difference of the means.
    other = [dict(r, model="C", reasoning_f1=0.5) for r in rows]
    make_report([tmp_path / "a.jsonl", _write(tmp_path / "c.jsonl", other)], tmp_path / "two")
    (cmp,) = json.loads((tmp_path / "two" / "summary.json").read_text())["comparisons"]
    f1_a = (n_right * 1.0 + (60 - n_right) * 0.5) / 60
    assert cmp["reasoning_f1"]["difference"] == pytest.approx(0.5 - f1_a)
    assert cmp["reasoning_f1"]["n"] == 60
    assert "| C | reasoning F1 |" in (tmp_path / "two" / "report.md").read_text()
    # Without reasoning scores there is no section.
    plain = make_report([_write(tmp_path / "b.jsonl", _rows("B"))], tmp_path / "plain")
    assert "Reasoning quality" not in plain.read_text()
    assert "reasoning F1" not in plain.read_text()


def test_open_and_severity_metrics_in_the_report(tmp_path):
    """BLEU / ROUGE-L means, the same-findings share, and kappa with unreadable grades counted
    as the farthest grade, against scikit-learn on the same pairs."""
    from sklearn.metrics import cohen_kappa_score

    truth = [0, 1, 2, 3, 3, 2, 1, 0]
    read = [0, 1, 2, 2, None, 2, 0, None]  # two unreadable: true 3 -> 0, true 0 -> 3
    rows = []
    for i, (t, g) in enumerate(zip(truth, read, strict=True)):
        rows.append({"id": f"v{i}", "model": "A", "answer_type": "severity", "correct": g == t,
                     "reference": str(t), "severity_grade": g, "severity_max_grade": 3,
                     "severity_abs_error": float(abs((g if g is not None else 3 - 3 * (t > 1))
                                                     - t))})  # fmt: skip
    for i in range(4):
        rows.append({"id": f"o{i}", "model": "A", "answer_type": "open", "correct": i < 3,
                     "bleu": 0.25 * i, "rouge_l": 0.5, "same_findings": i < 3,
                     "token_f1": 0.5})  # fmt: skip
    report = make_report([_write(tmp_path / "a.jsonl", rows)], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["models"]["A"]
    expected = cohen_kappa_score(truth, [0, 1, 2, 2, 0, 2, 0, 3], weights="quadratic",
                                 labels=[0, 1, 2, 3])  # fmt: skip
    assert summary["severity_kappa"]["3"]["kappa"] == pytest.approx(expected)
    assert summary["severity_kappa"]["3"]["n"] == 8
    assert summary["bleu"]["estimate"] == pytest.approx(0.375)
    assert summary["same_findings"]["successes"] == 3
    text = report.read_text()
    assert f"| 0-3 | {expected:.3f} (n=8) |" in text and "same findings" in text


def test_grounded_accuracy_and_pixel_hd95_in_the_report(tmp_path):
    """10 answers with an evidence box: 8 right, 5 of them with the box found; 2 grounding rows
    with a PNG mask (HD95 in pixels), one with no predicted mask."""
    rows = []
    for i in range(10):
        rows.append({"id": f"a{i}", "model": "A", "answer_type": "closed", "correct": i < 8,
                     "evidence_iou": 0.7 if i < 5 else 0.1, "grounded_correct": i < 5})  # fmt: skip
    rows.append({"id": "g0", "model": "A", "answer_type": "grounding", "correct": True,
                 "iou": 0.6, "dice": 0.8, "hd95_px": 2.0, "mask_missing": False})  # fmt: skip
    rows.append({"id": "g1", "model": "A", "answer_type": "grounding", "correct": False,
                 "iou": 0.2, "dice": 0.0, "hd95_px": 6.0, "mask_missing": True})  # fmt: skip
    report = make_report([_write(tmp_path / "a.jsonl", rows)], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["models"]["A"]
    assert summary["grounded_accuracy"]["successes"] == 5
    assert summary["accuracy_where_grounded"]["successes"] == 8
    assert summary["hd95_px"] == {"median": 4.0, "n": 2} and summary["hd95"] is None
    assert summary["masks_missing"] == ["g1"]
    assert summary["dice"]["estimate"] == pytest.approx(0.4)  # the missing mask counts as 0
    text = report.read_text()
    lo, hi = _wilson(5, 10)
    assert "## Grounding" in text and f"0.500 [{lo:.3f}, {hi:.3f}] (5/10)" in text
    assert "| +0.300 | 4.000 (n=2) | 1 (g1) |" in text


def test_a_model_without_masks_gets_no_dice(tmp_path):
    """A box-only model answers grounding questions whose Samples hold masks: every row is
    scored Dice 0 / HD95 inf by the scorer, and the report shows no Dice or HD95 for it rather
    than a failed segmentation; a model with one mask keeps its Dice."""
    rows = {"boxes": [], "masks": []}
    for i in range(4):
        base = {"id": f"g{i}", "answer_type": "grounding", "correct": False, "iou": 0.3}
        rows["boxes"].append(base | {"model": "boxes", "dice": 0.0, "hd95_px": float("inf"),
                                     "mask_missing": True})  # fmt: skip
        rows["masks"].append(base | {"model": "masks", "dice": 0.5 if i == 0 else 0.0,
                                     "hd95_px": 3.0 if i == 0 else float("inf"),
                                     "mask_missing": i != 0})  # fmt: skip
    files = [_write(tmp_path / f"{n}.jsonl", r) for n, r in rows.items()]
    report = make_report(files, tmp_path / "out")
    models = json.loads((tmp_path / "out" / "summary.json").read_text())["models"]
    assert models["boxes"]["masks_predicted"] is False and models["masks"]["masks_predicted"]
    assert models["boxes"]["dice"] is None and models["boxes"]["hd95_px"] is None
    assert models["masks"]["dice"]["estimate"] == pytest.approx(0.125)
    text = report.read_text()
    assert "| all 4: no mask predicted (no mask head), no Dice or HD95 |" in text
    overview = text.split("## Overview")[1].split("\n\n")[1]
    boxes_row = next(line for line in overview.splitlines() if line.startswith("| boxes |"))
    assert boxes_row.split(" | ")[5] == "—"  # the Dice mean column


def test_accuracy_by_modality_and_answer_type_and_hedges(tmp_path, two_model_report):
    report, summary = two_model_report
    # Model A, MRI (even ids) choice questions (ids 0-19): right below 18 -> 0, 2, ..., 16.
    assert summary["models"]["A"]["accuracy_by_modality_and_type"]["MRI"]["choice"][
        "successes"] == 9  # fmt: skip
    text = report.read_text()
    lo, hi = _wilson(9, 10)
    assert f"| MRI | choice | 0.900 [{lo:.3f}, {hi:.3f}] (9/10) |" in text
    rows = [dict(r, hedged=r["id"] in ("s00", "s01")) for r in _rows("A")[:20]]
    hedged = make_report([_write(tmp_path / "h.jsonl", rows)], tmp_path / "h")
    assert "Hedged replies (two options offered, or both yes and no; scored wrong): A 2/20." in (
        hedged.read_text())  # fmt: skip


def test_no_iou_row_when_neither_model_has_boxes(tmp_path):
    def closed(model: str) -> list[dict]:
        return [r for r in _rows(model) if r["answer_type"] != "grounding"]

    a = _write(tmp_path / "a.jsonl", closed("A"))
    b = _write(tmp_path / "b.jsonl", closed("B"))
    text = make_report([a, b], tmp_path / "out", gallery=0).read_text()
    assert "| B | accuracy | " in text and "IoU mean |" not in text.split("## Paired")[1]

"""The evaluation runner: prediction lines, resume after a crash, metrics, config and overrides.

Runs on the real tiny Qwen2.5-VL (random weights, box and mask heads), loaded once per module;
its answers are arbitrary, so exact metric values are checked by calling `score` directly with
`Answer` objects built here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medvl.config import ConfigError
from medvl.data import read_manifest
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.eval.metrics import answer_correct
from medvl.eval.predictions import read_predictions
from medvl.eval.reasoning import ROW_KEYS, split_steps
from medvl.eval.runner import EvalConfig, evaluate, run_eval, summarize
from medvl.eval.scoring import score
from medvl.model.medvlm import MedVLM
from medvl.model.replies import Answer
from medvl.scans import load_scan

CONTRACT_KEYS = {
    "id", "model", "output", "answer", "box", "correct", "latency_s", "tokens", "answer_type",
    "modality", "anatomy", "split", "reference", "well_formed", "iou", "dice", "hd95", "hd95_px",
    "severity_abs_error", "token_f1", *ROW_KEYS, "question", "options", "image",
    "reference_box", "evidence_iou", "grounded_correct", "mask_missing", "bleu", "rouge_l",
    "same_findings", "severity_grade", "severity_max_grade", "hedged",
}  # fmt: skip


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    return generate_phantom_dataset(out, n=1, modalities=("chest", "fundus"), progress=False)


@pytest.fixture(scope="module")
def vlm(tiny_model_path: Callable[..., Path]) -> MedVLM:
    """The real tiny model with box and mask heads, loaded once for the module."""
    return MedVLM.from_pretrained(tiny_model_path("qwen2_5_vl"), heads=["box", "mask"])


def _config(manifest: Path, output: Path, **kw: Any) -> EvalConfig:
    kw.setdefault("max_new_tokens", 8)
    return EvalConfig(
        model="tiny:qwen2_5_vl-tiny", manifest=str(manifest), output=str(output),
        progress=False, batch_size=4, n_frames=2, **kw,
    )  # fmt: skip


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in _lines(path)]


def _sample(manifest: Path, sample_id: str) -> Any:
    return next(s for s in read_manifest(manifest) if s.id == sample_id)


def _answer(text: str | None, box: list[float] | None = None, mask: Any = None) -> Answer:
    raw = f"<think>look</think><answer>{text}</answer>"
    return Answer("look", text, box, mask, raw, "text" if box else None, True)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_predictions_contract_on_tiny_model(manifest: Path, tmp_path: Path, vlm: MedVLM) -> None:
    out = evaluate(_config(manifest, tmp_path / "p.jsonl"), model=vlm)
    samples = {s.id: s for s in read_manifest(manifest)}
    rows = [json.loads(line) for line in _lines(out)]
    assert sorted(r["id"] for r in rows) == sorted(samples)  # one line per sample
    for row in rows:
        assert row.keys() >= CONTRACT_KEYS, CONTRACT_KEYS - row.keys()
        sample = samples[row["id"]]
        assert row["model"] == "tiny:qwen2_5_vl-tiny"
        assert row["reference"] == sample.answer and row["split"] == sample.split
        assert row["answer_type"] == sample.answer_type and row["modality"] == sample.modality
        if sample.answer_type != "grounding":  # grounding: Acc@0.5, checked below
            assert row["correct"] == answer_correct(
                row["answer"], sample.answer, sample.answer_type, sample.options
            )
        assert isinstance(row["output"], str) and isinstance(row["well_formed"], bool)
        assert row["question"] == sample.question and row["options"] == sample.options
        assert row["image"] == sample.image and row["reference_box"] == sample.box
        n_tokens = len(vlm.tokenizer(row["output"], add_special_tokens=False)["input_ids"])
        assert row["tokens"] == n_tokens and 0 < row["tokens"] <= 8
        assert _number(row["latency_s"]) and row["latency_s"] >= 0
        if sample.answer_type == "grounding":
            assert _number(row["iou"]) and 0.0 <= row["iou"] <= 1.0
            assert row["correct"] is (row["iou"] >= 0.5)  # Acc@0.5
            assert row["box"] is not None and row["box_source"] == "head"  # the box head
        else:
            assert isinstance(row["correct"], bool) and row["iou"] is None
        if sample.answer_type == "open":
            assert _number(row["token_f1"]) and 0.0 <= row["token_f1"] <= 1.0
        else:
            assert row["token_f1"] is None
        # Phantom samples carry reference steps and the tiny model is asked to reason.
        assert row["reasoning_steps"] == len(split_steps(row["reasoning"]))
        assert row["reasoning_reference_steps"] == len(sample.reasoning)
        assert 0.0 <= row["reasoning_recall"] <= 1.0 and 0.0 <= row["reasoning_f1"] <= 1.0
        if sample.answer_type == "severity":
            err = row["severity_abs_error"]
            assert err is None or (_number(err) and 0 <= err <= 3)
        else:
            assert row["severity_abs_error"] is None
    fundus = next(r for r in rows if r["id"] == "fundus-000000-grounding")
    assert 0.0 <= fundus["dice"] <= 1.0 and fundus["hd95_px"] >= 0  # mask head vs the PNG reference
    chest = next(r for r in rows if r["id"] == "chest-000000-grounding")
    assert chest["dice"] is None and chest["hd95"] is None  # no reference mask on this sample
    saved = yaml.safe_load((tmp_path / "p.jsonl.config.yaml").read_text())
    assert saved["manifest"] == str(manifest) and saved["batch_size"] == 4
    summary = summarize(out)
    assert summary["n"] == len(samples) and 0 <= summary["mean_iou"] <= 1
    assert set(summary["accuracy_by_type"]) == {"choice", "closed", "grounding", "open", "severity"}
    assert 0 <= summary["accuracy"] <= 1 and summary["mean_latency_s"] >= 0


def test_reasoning_scores_off_or_not_asked(manifest: Path, tmp_path: Path, vlm: MedVLM) -> None:
    for name, kw in (("off", {"reasoning_matcher": "none"}), ("direct", {"reasoning": False})):
        out = evaluate(_config(manifest, tmp_path / f"{name}.jsonl", max_samples=3, **kw),
                       model=vlm)  # fmt: skip
        for row in read_predictions(out):
            assert all(row[k] is None for k in ROW_KEYS), row
    with pytest.raises(ValueError, match="reasoning_matcher must be one of"):
        _config(manifest, tmp_path / "x.jsonl", reasoning_matcher="bert")


def test_score_correct_and_iou(manifest: Path) -> None:
    root = manifest.parent
    choice = _sample(manifest, "chest-000000-choice-grade")  # reference "A"
    assert score(choice, _answer("A"), root)["correct"] is True
    assert score(choice, _answer("B"), root)["correct"] is False
    closed = _sample(manifest, "fundus-000000-closed-1")  # reference "no"
    assert score(closed, _answer("no"), root)["correct"] is True
    assert score(closed, _answer(None), root)["correct"] is False
    chest = _sample(manifest, "chest-000000-grounding")
    x1, y1, x2, y2 = chest.box
    same = score(chest, _answer("here", list(chest.box)), root)
    assert same["iou"] == pytest.approx(1.0) and same["correct"] is True  # Acc@0.5
    half = [x1, y1, (x1 + x2) / 2, y2]  # the left half of the reference box
    assert score(chest, _answer("here", half), root)["iou"] == pytest.approx(0.5, abs=1e-5)
    missed = score(chest, _answer("here"), root)
    assert missed["iou"] == 0.0 and missed["correct"] is False  # no box predicted
    assert score(chest, _answer("here", [0.1, 0.1, 0.1, 0.5, 0.5, 0.5]), root)["iou"] == 0.0
    # A mask predicted for a sample without a reference mask: no dice / hd95.
    image = load_scan(chest.image_paths(root)[0])[0].as_tensor()
    metrics = score(chest, _answer("here", list(chest.box), image > 0), root)
    assert metrics["dice"] is None and metrics["hd95"] is None


def test_score_records_hedges(manifest: Path) -> None:
    root = manifest.parent
    choice = _sample(manifest, "chest-000000-choice-grade")  # reference "A"
    hedge = score(choice, _answer("A or B"), root)
    assert hedge["hedged"] is True and hedge["correct"] is False
    assert score(choice, _answer("A"), root)["hedged"] is False
    closed = _sample(manifest, "fundus-000000-closed-1")  # reference "no"
    both = score(closed, _answer("yes/no"), root)
    assert both["hedged"] is True and both["correct"] is False
    assert score(closed, _answer("no"), root)["hedged"] is False
    assert score(_sample(manifest, "chest-000000-open"), _answer("x"), root)["hedged"] is None


def test_score_grounded_accuracy_of_an_answer_with_its_evidence_box(manifest: Path) -> None:
    """A choice question whose Sample carries the finding's box: right answer with the box
    found, right answer with the box elsewhere or missing, and a wrong answer."""
    root = manifest.parent
    chest = _sample(manifest, "chest-000000-grounding")
    choice = dataclasses.replace(_sample(manifest, "chest-000000-choice-grade"),
                                 box=list(chest.box))  # fmt: skip
    x1, y1, x2, y2 = chest.box
    elsewhere = [x2, y2, min(1.0, 2 * x2 - x1), min(1.0, 2 * y2 - y1)]  # touches only a corner
    found = score(choice, _answer("A", list(chest.box)), root)
    assert found["correct"] is True and found["grounded_correct"] is True
    assert found["evidence_iou"] == pytest.approx(1.0) and found["iou"] is None
    for box in (elsewhere, None):
        lucky = score(choice, _answer("A", box), root)
        assert lucky["correct"] is True and lucky["grounded_correct"] is False
        assert lucky["evidence_iou"] == pytest.approx(0.0)
    wrong = score(choice, _answer("B", list(chest.box)), root)
    assert wrong["grounded_correct"] is False and wrong["evidence_iou"] == pytest.approx(1.0)
    plain = score(_sample(manifest, "chest-000000-choice-grade"), _answer("A"), root)
    assert plain["grounded_correct"] is None and plain["evidence_iou"] is None


def test_score_mask_dice_hd95(manifest: Path) -> None:
    root = manifest.parent
    sample = _sample(manifest, "fundus-000000-grounding")
    assert sample.meta["mask_label"] == 1
    label = load_scan(sample.mask_path(root))[0].as_tensor()
    reference = label == sample.meta["mask_label"]
    assert reference.any()
    exact = score(sample, _answer("here", list(sample.box), reference.clone()), root)
    # A PNG mask has no physical spacing: its HD95 is in pixels, in its own column.
    assert exact["dice"] == pytest.approx(1.0) and exact["hd95_px"] == pytest.approx(0.0)
    assert exact["hd95"] is None
    assert 0.0 <= exact["iou"] <= 1.0
    empty = score(sample, _answer("here", list(sample.box), torch.zeros_like(reference)), root)
    assert empty["dice"] == pytest.approx(0.0) and math.isinf(empty["hd95_px"])
    wrong_shape = score(sample, _answer("here", None, reference[:-1]), root)
    assert wrong_shape["dice"] is None and wrong_shape["hd95_px"] is None
    # No mask predicted for a grounding question with a reference mask: Dice 0, listed.
    missing = score(sample, _answer("here", list(sample.box)), root)
    assert missing["mask_missing"] is True and missing["dice"] == 0.0
    assert exact["mask_missing"] is False


def test_score_open_and_severity(manifest: Path) -> None:
    root = manifest.parent
    chest_open = _sample(manifest, "chest-000000-open")  # "no abnormality"
    metrics = score(chest_open, _answer("no abnormality"), root)
    assert metrics["token_f1"] == pytest.approx(1.0) and metrics["correct"] is True
    assert metrics["iou"] is None and metrics["severity_abs_error"] is None
    fundus_open = _sample(manifest, "fundus-000000-open")  # 5 tokens
    partial = score(fundus_open, _answer("retinal haemorrhages"), root)
    assert partial["token_f1"] == pytest.approx(2 * 1.0 * 0.4 / 1.4)  # precision 1, recall 2/5
    assert score(fundus_open, _answer("cat"), root)["token_f1"] == 0.0
    severity = _sample(manifest, "fundus-000000-severity")  # grade 3
    assert score(severity, _answer("1"), root)["severity_abs_error"] == pytest.approx(2.0)
    exact = score(severity, _answer("3"), root)
    assert exact["severity_abs_error"] == 0.0 and exact["correct"] is True
    assert exact["severity_grade"] == 3 and exact["severity_max_grade"] == 4  # ICDR 0-4
    # Refusing or leaving the scale is no way out: the worst error on 0-4 for a 3 is 3 (vs 0).
    for reply in ("unsure", "Grade 10"):
        refused = score(severity, _answer(reply), root)
        assert refused["severity_abs_error"] == 3.0 and refused["severity_grade"] is None
    assert score(severity, _answer("3"), root)["token_f1"] is None
    assert score(severity, _answer("3"), root)["bleu"] is None


def test_score_open_lists_in_any_order(manifest: Path) -> None:
    sample = next(s for s in read_manifest(manifest)
                  if s.answer_type == "open" and "," in s.answer)  # fmt: skip
    items = [x.strip() for x in sample.answer.split(",")]
    swapped = " and ".join(reversed(items))
    metrics = score(sample, _answer(swapped), manifest.parent)
    assert metrics["correct"] is True and metrics["same_findings"] is True
    assert 0.0 < metrics["bleu"] < 1.0 and 0.0 < metrics["rouge_l"] < 1.0
    exact = score(sample, _answer(sample.answer), manifest.parent)
    assert exact["bleu"] == pytest.approx(1.0) and exact["rouge_l"] == pytest.approx(1.0)
    missing = score(sample, _answer(items[0]), manifest.parent)
    assert missing["correct"] is False and missing["same_findings"] is False


def test_resume_skips_done_ids(manifest: Path, tmp_path: Path, vlm: MedVLM) -> None:
    out = tmp_path / "p.jsonl"
    evaluate(_config(manifest, out, max_samples=3), model=vlm)
    first = out.read_bytes()
    assert len(first.splitlines()) == 3
    evaluate(_config(manifest, out), model=vlm)
    full = out.read_bytes()
    ids = _ids(out)
    assert full.startswith(first)  # the first 3 lines untouched, byte for byte
    assert len(ids) == len(set(ids)) == len(read_manifest(manifest))
    evaluate(_config(manifest, out), model=vlm)  # all done: nothing answered, nothing written
    assert out.read_bytes() == full


def test_truncated_last_line_is_redone(manifest: Path, tmp_path: Path, vlm: MedVLM) -> None:
    out = tmp_path / "p.jsonl"
    evaluate(_config(manifest, out, max_samples=5), model=vlm)
    lines = _lines(out)
    out.write_text("\n".join(lines[:4]) + "\n" + lines[4][: len(lines[4]) // 2], "utf-8")
    with pytest.warns(RuntimeWarning, match="truncated last line"):
        evaluate(_config(manifest, out, max_samples=5), model=vlm)
    redone = _lines(out)
    assert redone[:4] == lines[:4] and len(redone) == 5
    assert json.loads(redone[4])["id"] == json.loads(lines[4])["id"]
    ids = _ids(out)
    assert sorted(ids) == sorted(s.id for s in read_manifest(manifest)[:5])


def test_damaged_middle_line_and_other_model_fail(
    manifest: Path, tmp_path: Path, vlm: MedVLM
) -> None:
    out = tmp_path / "p.jsonl"
    evaluate(_config(manifest, out, max_samples=3), model=vlm)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="holds predictions of model"):
        evaluate(_config(manifest, out, model_name="other"), model=vlm)
    assert out.read_bytes() == before
    lines = _lines(out)
    out.write_text("\n".join([lines[0], "{oops", *lines[2:]]) + "\n", "utf-8")
    with pytest.raises(ValueError, match=r"p\.jsonl:2: damaged"):
        read_predictions(out)
    with pytest.raises(ValueError, match=r"p\.jsonl:2: damaged"):
        evaluate(_config(manifest, out), model=vlm)


def test_split_filter_and_model_name() -> None:
    config = EvalConfig(model="outputs/sft_tiny/final", manifest="m.jsonl")
    assert config.resolved_model_name == "sft_tiny/final"
    assert config.output_path == Path("outputs/eval/sft_tiny_final/predictions.jsonl")
    assert EvalConfig(model="/models/Qwen2.5-VL-3B", manifest="m").resolved_model_name == (
        "Qwen2.5-VL-3B"
    )
    with pytest.raises(ConfigError, match="batch_size"):
        EvalConfig.from_dict({"model": "x", "manifest": "m", "batch_size": 0})


def test_run_eval_tiny_model_with_overrides(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "tiny:qwen2_5_vl-tiny",
                "manifest": str(manifest),
                "output": str(tmp_path / "tiny.jsonl"),
                "batch_size": 2,
                "max_new_tokens": 3,
                "progress": False,
                "split": "test",
            }
        )  # fmt: skip
    )
    out = run_eval(config, ["--split", "train", "--max_samples", "3", "--reasoning", "false"])
    rows = [json.loads(line) for line in _lines(out)]
    assert len(rows) == 3 and all(r.keys() >= CONTRACT_KEYS for r in rows)
    for row in rows:
        assert 0 < row["tokens"] <= 3 and isinstance(row["output"], str)
    saved = yaml.safe_load(Path(str(out) + ".config.yaml").read_text())
    assert saved["split"] == "train" and saved["max_samples"] == 3 and saved["reasoning"] is False
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :])["n"] == 3
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        run_eval(config, ["--batchsize", "2"])


def test_run_eval_grounding_on_tiny_model(manifest: Path, tmp_path: Path) -> None:
    ids = [s.id for s in read_manifest(manifest) if s.answer_type == "grounding"]
    # The manifest's paths are relative to it: keep the subset in the phantoms' folder.
    local = manifest.parent / "grounding-only.jsonl"
    lines = manifest.read_text().splitlines()
    local.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["id"] in ids))
    config = _config(local, tmp_path / "g.jsonl", max_new_tokens=4)
    rows = [json.loads(line) for line in _lines(evaluate(config))]  # loads config.model itself
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(0.0 <= r["iou"] <= 1.0 for r in rows)


def test_score_severity_uses_the_samples_own_scale(manifest: Path) -> None:
    """A Sample whose meta names its scale (3DReasonKnee's morphology 0-8) is read on it."""
    base = _sample(manifest, "fundus-000000-severity")  # grade 3, ICDR 0-4 by modality
    sample = dataclasses.replace(base, meta={**base.meta, "max_grade": 8})
    six = score(sample, _answer("grade 6"), manifest.parent)
    assert six["severity_grade"] == 6 and six["severity_max_grade"] == 8
    assert six["severity_abs_error"] == 3.0  # readable on 0-8, not on 0-4
    assert score(base, _answer("grade 6"), manifest.parent)["severity_grade"] is None
    off = score(sample, _answer("grade 9"), manifest.parent)
    assert off["severity_grade"] is None and off["severity_abs_error"] == 5.0  # worst: 8 - 3


def _copy_of(manifest: Path, tmp_path: Path) -> Path:
    """A copy of the phantom dataset's folder, to break its files."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(manifest.parent, copy)
    return copy / manifest.name


def test_an_unreadable_scan_is_an_error_line_not_a_crash(
    manifest: Path, tmp_path: Path, vlm: MedVLM
) -> None:
    from medvl.eval.report import make_report

    broken = _copy_of(manifest, tmp_path)
    samples = read_manifest(broken)
    corrupt, missing = samples[1], samples[len(samples) - 1]
    (broken.parent / _first(corrupt)).write_bytes(b"not an image")
    (broken.parent / _first(missing)).unlink()
    out = tmp_path / "p.jsonl"
    evaluate(_config(broken, out, check_files=False), model=vlm)
    rows = {r["id"]: r for r in read_predictions(out)}
    assert len(rows) == len(samples)
    bad = {i for i, r in rows.items() if r.get("error")}
    sharing = {s.id for s in samples if _first(s) in (_first(corrupt), _first(missing))}
    assert bad == sharing and {corrupt.id, missing.id} <= bad
    assert Path(_first(corrupt)).name in rows[corrupt.id]["error"]
    assert "no such file" in rows[missing.id]["error"]
    assert all(rows[i]["correct"] is None and rows[i]["answer"] is None for i in bad)
    assert all(isinstance(r["output"], str) for i, r in rows.items() if i not in bad)
    assert summarize(out)["unreadable"] == len(bad)
    report = make_report([out], tmp_path / "report", gallery=0).read_text()
    assert "could not be read" in report and corrupt.id in report
    evaluate(_config(broken, out, check_files=False), model=vlm)  # resumes: nothing to do
    assert len(_lines(out)) == len(samples)


def _first(sample: Any) -> str:
    return str(sample.image[0] if isinstance(sample.image, (list, tuple)) else sample.image)


def test_a_rerun_with_other_generation_settings_is_refused(
    manifest: Path, tmp_path: Path, vlm: MedVLM
) -> None:
    out = tmp_path / "p.jsonl"
    evaluate(_config(manifest, out, max_samples=2), model=vlm)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match=r"max_new_tokens: 8 there, 12 now.*reasoning"):
        evaluate(_config(manifest, out, max_samples=3, max_new_tokens=12, reasoning=False),
                 model=vlm)  # fmt: skip
    assert out.read_bytes() == before
    evaluate(_config(manifest, out, max_samples=3), model=vlm)  # same settings: resumes
    assert len(_lines(out)) == 3
    evaluate(_config(manifest, out, max_samples=4, max_new_tokens=12, force=True), model=vlm)
    assert len(_lines(out)) == 4 and yaml.safe_load(
        out.with_name(out.name + ".config.yaml").read_text())["max_new_tokens"] == 12

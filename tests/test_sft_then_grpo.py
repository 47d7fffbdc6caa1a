"""SFT then GRPO over several answer types: per-type tables, GRPO's own types, the report."""

from __future__ import annotations

from medvl.data import read_manifest
from medvl.experiments import PhantomQuestions
from medvl.sft_then_grpo import run_sft_then_grpo


def test_several_answer_types_give_a_table_each_and_grpo_keeps_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    questions = (PhantomQuestions("chest", ("closed", "grounding"), "", 12, 6, val_cases=2),
                 PhantomQuestions("fundus", ("grounding",), "", 2, 2),
                 PhantomQuestions("knee", ("grounding",), "", 2, 2))  # fmt: skip
    result = run_sft_then_grpo(
        tmp_path / "run", questions, sft_steps=4, grpo_steps=2, num_generations=2,
        grpo_batch_size=2, grpo_types=("closed",), rewards=("accuracy",), heads=("box",),
        max_new_tokens=8, dynamic_sampling=1,
    )  # fmt: skip
    test = read_manifest(tmp_path / "run" / "data" / "test.jsonl")
    kinds = {s.answer_type for s in test}
    assert kinds == {"closed", "grounding"} and set(result.by_type) == kinds
    assert {s.anatomy for s in test if s.answer_type == "grounding"} >= {"chest", "fundus", "knee"}
    assert {s.anatomy for s in test if s.answer_type == "closed"} == {"chest"}
    assert (result.sft / "heads.safetensors").is_file()
    val = read_manifest(tmp_path / "run" / "data" / "val.jsonl")
    assert val and {s.split for s in val} == {"val"} and {s.anatomy for s in val} == {"chest"}
    assert not {s.image for s in val} & {s.image for s in test}  # cases of their own
    assert result.sft_val_loss is not None and result.sft_val_loss > 0
    grounding = result.by_type["grounding"]
    n_boxes = sum(s.answer_type == "grounding" for s in test)
    assert all(r.mean_iou is not None and r.mean_iou.n == n_boxes for r in grounding.rows)
    assert grounding.iou_gain is not None and grounding.mean_box_iou is not None
    assert result.by_type["closed"].row("grpo").mean_iou is None
    assert result.table.row("sft").accuracy.n == len(test)  # every type in the overall table
    # GRPO trained on the closed questions alone.
    grpo_train = read_manifest(tmp_path / "run" / "data" / "train_grpo.jsonl")
    assert grpo_train and {s.answer_type for s in grpo_train} == {"closed"}
    html = result.report.with_suffix(".html")
    assert html.is_file() and "Worst cases" in html.read_text(encoding="utf-8")
    by_type = result.report.read_text().split("## Accuracy by answer type")[1]
    assert "| answer type | sft | grpo | base |" in by_type
    assert "\n| closed | " in by_type and "\n| grounding | " in by_type

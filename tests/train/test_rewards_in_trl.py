"""medvl's rewards plug into TRL's own GRPOTrainer unchanged: a real TRL run on the tiny
Qwen2.5-VL with phantom questions as a dataset, every Sample field a column."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl", reason="trl is in the dev and bench extras")

from datasets import Dataset  # noqa: E402

from medvl.data.dataset import DatasetConfig, MedVLDataset  # noqa: E402
from medvl.data.phantom_samples import generate_phantom_dataset  # noqa: E402
from medvl.model import load_vlm  # noqa: E402
from medvl.model.grounding import resized_image_size  # noqa: E402
from medvl.model.inputs import show_scan  # noqa: E402
from medvl.train.rewards import default_rewards, format_reward  # noqa: E402


def test_trl_grpo_trainer_runs_medvl_rewards(
    tiny_model_path, tmp_path: Path, fresh_accelerator_state
) -> None:
    manifest = generate_phantom_dataset(tmp_path / "data", n=1, modalities=("chest",),
                                        progress=False)  # fmt: skip
    settings = DatasetConfig(size=32)
    model, processor = load_vlm(tiny_model_path("qwen2_5_vl"), dtype=torch.float32)
    rows = []
    for item in MedVLDataset(manifest, settings):
        sample = item["sample"]
        image = show_scan(item["scan"], settings).content["image"]
        rows.append({
            "prompt": [{"role": "user", "content": sample.question}], "images": [image],
            # Qwen2.5-VL writes boxes in pixels of the resized image: box_iou_reward needs it.
            "image_size": list(resized_image_size(processor, *image.size)),
            "answer": sample.answer, "answer_type": sample.answer_type,
            "options": sample.options, "severity": sample.severity,
            "box": item.get("box"), "modality": sample.modality, "anatomy": sample.anatomy,
        })  # fmt: skip
    # One question of each answer type, so each reward has rows it applies to.
    rows = list({r["answer_type"]: r for r in rows}.values())
    assert {"grounding", "severity"} <= {r["answer_type"] for r in rows}
    rewards = [format_reward, *default_rewards("qwen2_5_vl")[1:]]
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, max_steps=len(rows), learning_rate=1e-5, report_to="none",
        use_cpu=True, bf16=False, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(model=model, reward_funcs=rewards, args=args,
                              train_dataset=Dataset.from_list(rows),
                              processing_class=processor)  # fmt: skip
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    for func in rewards:
        assert f"rewards/{func.__name__}/mean" in logged, sorted(logged)

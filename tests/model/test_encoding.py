"""medvl.model.encoding through MedVLM.collate: SFT batches label only the assistant turn, with
the prompt answering uses, and head targets."""

from __future__ import annotations

import pytest
import torch

from medvl.model.encoding import encode_example
from medvl.model.grounding import resized_image_size
from medvl.model.prompts import build_target

N_FRAMES = 4  # as the fixtures' dataset items (tests/model/conftest.py)
MAX_NEW = 8


# -- training -------------------------------------------------------------------------------


def test_collate_labels_only_the_assistant_turn(grounded, items):
    batch = grounded.collate(items)
    tok, processor, family = grounded.tokenizer, grounded.processor, grounded.family
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, item in enumerate(items):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        length = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row, :length].all()  # right padding
        kept = (labels != -100).nonzero()[:, 0]
        start, end = int(kept[0]), int(kept[-1]) + 1
        assert end == length and len(kept) == end - start  # one run, to the last real token
        assert (labels[start:end] == ids[start:end]).all()

        # The prompt is the one answering uses; the labelled text is the target + <|im_end|>.
        prompt = encode_example(processor, family, item, grounded.config.prompt)
        assert torch.equal(ids[:start], prompt.inputs["input_ids"][0])
        sample = item["sample"].to_dict() | {"box": item["box"], "meta": item["sample"].meta}
        if sample["answer_type"] == "grounding" and len(item["box"]) == 4:
            w, h = item["messages"][0]["content"][0]["image"].size
            size = resized_image_size(processor, w, h)
        else:
            size = None
        target = build_target(sample, family, image_size=size)
        if sample["answer_type"] == "grounding":  # box and mask targets: head tokens first
            target = target.replace("<answer>", "<answer><|box|><|seg|>")
            assert int(batch["box_dims"][row]) == len(item["box"]) // 2
            assert batch["box_targets"][row, : len(item["box"])].tolist() == pytest.approx(
                item["box"]
            )
            mask = batch["mask_targets"][row]
            assert mask.shape[0] == (N_FRAMES if len(item["box"]) == 6 else 1) and mask.any()
        else:
            assert int(batch["box_dims"][row]) == 0 and batch["mask_targets"][row] is None
        assert tok.decode(ids[start:end]) == target + "<|im_end|>"


def test_collate_takes_a_sample_with_a_loaded_scan(plain, cases):
    from medvl.data import Sample

    chest = cases["chest"]
    sample = Sample.from_dict({
        "id": "c1", "image": str(chest["path"]), "modality": "X-ray", "anatomy": "chest",
        "question": "Where is the heart?", "answer": "heart", "answer_type": "grounding",
        "box": chest["case"].structures["heart"], "reasoning": ["it is there"],
    })  # fmt: skip
    batch = plain.collate([{"sample": sample, "scan": chest["scan"]}])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    size = resized_image_size(plain.processor, *chest["scan"].shape[1:])
    target = build_target(sample, plain.family, image_size=size)
    assert plain.tokenizer.decode(ids[labels != -100]) == target + "<|im_end|>"
    assert "box_targets" not in batch  # no heads, no head targets

"""Prompts per answer type and family, SFT targets, reply parsing, and the chat templates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvl.data.sample import Sample
from medvl.model import FAMILIES, load_vlm, prepare_inputs
from medvl.model.grounding import parse_box, parse_box_3d, resized_image_size
from medvl.model.prompts import (
    DIRECT_SYSTEM,
    REASONING_SYSTEM,
    SeverityScale,
    build_prompt,
    build_target,
    describe_view,
)
from medvl.model.replies import parse_response
from medvl.scans.views import volume_to_frames, volume_to_mip, volume_to_montage, volume_to_slice

STEPS = ["The medial meniscus shows a linear signal reaching the surface.", "So it is torn."]


def sample(answer_type: str, **fields) -> Sample:
    record = {
        "id": f"q-{answer_type}",
        "image": "knee.nii.gz",
        "modality": "MRI",
        "anatomy": "knee",
        "question": "Is the medial meniscus torn?",
        "answer": "yes",
        "answer_type": answer_type,
        "reasoning": STEPS,
    }
    if answer_type == "choice":
        record |= {"options": {"A": "medial", "B": "lateral", "C": "both"}, "answer": "b"}
    elif answer_type == "open":
        record |= {"answer": "meniscal tear"}
    elif answer_type == "severity":
        record |= {"answer": "2", "severity": 2}
    elif answer_type == "grounding":
        record |= {"answer": "the tear", "box": [0.125, 0.25, 0.5, 0.625], "target": "tear"}
    return Sample.from_dict({**record, **fields})


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).random((1, 20, 24, 16), dtype=np.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_answer_type_gets_its_instruction(family):
    choice = build_prompt(sample("choice"), family).user_text
    assert choice.splitlines() == [
        "Is the medial meniscus torn?",
        "A. medial",
        "B. lateral",
        "C. both",
        "Answer with the letter of the correct option.",
    ]
    assert build_prompt(sample("closed"), family).user_text.endswith("Answer yes or no.")
    assert build_prompt(sample("open"), family).user_text.endswith("a short phrase.")
    severity = build_prompt(sample("severity"), family).user_text
    assert severity.endswith("single integer grade from 0 to 3 (MOAKS).")
    grounding = build_prompt(sample("grounding"), family).user_text
    expected = {
        "qwen2_vl": ["<|box_start|>(x1,y1),(x2,y2)<|box_end|>", "0 to 1000"],
        "qwen2_5_vl": ['"bbox_2d"', "in pixels of the image"],
        "qwen3_vl": ['"bbox_2d"', "0 to 1000"],
    }[family]
    assert all(part in grounding for part in expected), grounding
    box3d = sample("grounding", box=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert '"bbox_3d"' in build_prompt(box3d, family).user_text


def test_severity_scale_from_anatomy_or_parameter():
    def text(**kw):
        return build_prompt(kw, "qwen3_vl").user_text.splitlines()[-1]

    base = {"question": "Grade it.", "answer_type": "severity"}
    assert "0 to 4 (ICDR diabetic retinopathy)" in text(**base, modality="fundus", anatomy="")
    assert "0 to 4 (Kellgren-Lawrence)" in text(**base, modality="X-ray", anatomy="knee")
    assert "0 to 3 (MOAKS)" in text(**base, modality="MR", anatomy="Knee")
    assert text(**base, modality="CT", anatomy="lung") == "Answer with a single integer grade."
    lung = {**base, "modality": "CT", "anatomy": "lung"}
    assert build_prompt(lung, "qwen2_vl", severity_scale=(1, 5)).user_text.endswith("1 to 5.")
    scale = SeverityScale(0, 2, "custom")
    assert "0 to 2 (custom)" in build_prompt(lung, "qwen2_vl", severity_scale=scale).user_text


def test_reasoning_switch_changes_the_system_prompt():
    on, off = (
        build_prompt(sample("closed"), "qwen2_vl"),
        build_prompt(sample("closed"), "qwen2_vl", reasoning=False),
    )
    assert on.system == REASONING_SYSTEM and "<think>" in on.system and "<answer>" in on.system
    assert off.system == DIRECT_SYSTEM and "<think>" not in off.system and "<answer>" in off.system
    assert on.user_text == off.user_text


def test_views_are_described_from_their_maps(volume):
    frames = volume_to_frames(volume, 8, axis=0)
    text = describe_view(frames, sample("closed"))
    assert text.startswith("The video shows 8 sagittal slices of a knee MRI, one per frame")
    assert "from the patient's left to right" in text
    assert "anterior side on the left and superior at the top" in text  # radiological sagittal

    montage = describe_view(volume_to_montage(volume, 6, axis=2), sample("closed"))
    assert "grid of 6 axial slices" in montage and "labelled z=<slice number>" in montage
    assert "from inferior to superior" in montage and "right side on the left" in montage
    unlabelled = describe_view(volume_to_montage(volume, 6, axis=2, labels=False))
    assert "labelled" not in unlabelled and "of the scan" in unlabelled

    assert "coronal slice 5 of 24" in describe_view(volume_to_slice(volume, 5, axis=1))
    assert "maximum intensity projection of axial" in describe_view(volume_to_mip(volume))
    with pytest.raises(TypeError):
        describe_view(object())

    prompt = build_prompt(
        sample("grounding", box=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "qwen3_vl", frames
    )
    first, question, instruction = prompt.user_text.splitlines()
    assert first.startswith("The video shows") and question.endswith("torn?")
    assert '"bbox_3d"' in instruction


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["choice", "closed", "open", "severity", "grounding"])
def test_target_parses_back_to_the_answer(family, kind):
    s = sample(kind)
    size = resized_image_size(family, 500, 375) if family == "qwen2_5_vl" else None
    target = build_target(s, family, image_size=size)
    parsed = parse_response(target, reasoning=True)
    assert parsed.well_formed and parsed.reasoning == "\n".join(STEPS)
    if kind == "grounding":
        step = 1 / min(size) if size else 1e-3
        assert parse_box(parsed.answer, family, size) == pytest.approx(s.box, abs=step)
        assert "tear" in parsed.answer  # the sample's target meta key is the label
    else:
        assert parsed.answer == {"choice": "B", "severity": "2"}.get(kind, s.answer)

    direct = build_target(s, family, image_size=size, reasoning=False)
    assert direct.startswith("<answer>") and parse_response(direct, reasoning=False).well_formed


def test_targets_for_3d_boxes_and_without_steps():
    s = sample("grounding", box=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], reasoning=None)
    target = build_target(s, "qwen2_5_vl")  # no image size needed: 3D is normalised
    assert target.startswith("<answer>")  # no steps: no empty think block
    assert parse_box_3d(parse_response(target).answer) == pytest.approx(s.box, abs=1e-3)
    steps = build_target(s, "qwen2_5_vl", reasoning_steps=["a", " ", "b"])
    assert steps.startswith("<think>\na\nb\n</think>\n<answer>")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="family"):
        build_prompt(sample("closed"), "llava")
    with pytest.raises(ValueError, match="answer_type"):
        build_prompt({"question": "q", "answer_type": "essay"}, "qwen2_vl")
    with pytest.raises(ValueError, match="options"):
        build_prompt({"question": "q", "answer_type": "choice"}, "qwen2_vl")


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_templates_render_prompt_and_target(family, tiny_model_path, volume):
    _, processor = load_vlm(tiny_model_path(family), device="cpu")
    image = Image.new("RGB", (64, 48))
    size = resized_image_size(processor, *image.size)
    for s, vision in [(sample("grounding"), {"image": image}), (sample("choice"), {})]:
        prompt = build_prompt(s, family)
        messages = prompt.messages(**vision)
        target = build_target(s, family, image_size=size)
        chat = [*messages, {"role": "assistant", "content": [{"type": "text", "text": target}]}]
        text = processor.apply_chat_template(chat, tokenize=False)
        assert prompt.system in text and prompt.user_text in text and target in text
        assert text.count("<|im_start|>") == 3
        inputs = prepare_inputs(processor, messages)
        assert inputs["input_ids"].shape[1] > 0

    frames = volume_to_frames(volume, 4, axis=2, size=64)
    prompt = build_prompt(sample("closed"), family, view=frames)
    inputs = prepare_inputs(processor, prompt.messages(video=frames.frames))
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) > 0

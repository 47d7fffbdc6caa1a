"""ask(): one question about a 2D image or a 16-slice volume, on every tiny family."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvl.model import FAMILIES, ask, build_messages, load_vlm, prepare_inputs

# Vision tokens with the tiny pixel budgets (see medvl.model.tiny): patch 14 (Qwen2/2.5-VL) or
# 16 (Qwen3-VL), 2x2 merge, two frames per temporal patch.
IMAGE_TOKENS = {"qwen2_vl": 25, "qwen2_5_vl": 25, "qwen3_vl": 16}  # 128x128 image
VIDEO_TOKENS = {"qwen2_vl": 32, "qwen2_5_vl": 32, "qwen3_vl": 32}  # 16 frames of 64x64
MAX_NEW = 6


@pytest.fixture(scope="module")
def scans():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8))  # grayscale
    volume = rng.integers(0, 256, (16, 64, 64), dtype=np.uint8)
    return image, [Image.fromarray(s) for s in volume]


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request, tiny_model_path):
    model, processor = load_vlm(tiny_model_path(request.param), device="cpu")
    return request.param, model, processor


def _pads(processor, inputs) -> int:
    ids = inputs["input_ids"]
    return int(((ids == processor.image_token_id) | (ids == processor.video_token_id)).sum())


def test_ask_about_a_2d_image(vlm, scans):
    family, model, processor = vlm
    image, _ = scans
    result = ask(model, processor, "Is there a lesion?", image=image, max_new_tokens=MAX_NEW)
    assert isinstance(result.text, str)
    assert 1 <= result.new_tokens <= MAX_NEW
    assert result.vision_tokens == IMAGE_TOKENS[family]

    inputs = prepare_inputs(processor, build_messages("Is there a lesion?", image=image))
    assert _pads(processor, inputs) == result.vision_tokens
    assert int(inputs["image_grid_thw"].prod()) // 4 == result.vision_tokens
    assert result.prompt_tokens == inputs["input_ids"].shape[1] > result.vision_tokens


def test_ask_about_a_volume_as_video_frames(vlm, scans):
    family, model, processor = vlm
    _, frames = scans
    result = ask(
        model, processor, "Which slice shows the tear?", video=frames, max_new_tokens=MAX_NEW
    )
    assert isinstance(result.text, str)
    assert 1 <= result.new_tokens <= MAX_NEW
    assert result.vision_tokens == VIDEO_TOKENS[family]

    inputs = prepare_inputs(processor, build_messages("Q", video=frames))
    assert _pads(processor, inputs) == result.vision_tokens
    assert inputs["video_grid_thw"].tolist() == [[8, *inputs["video_grid_thw"][0, 1:].tolist()]]
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    # Every frame pair is one vision segment; Qwen3-VL puts a timestamp before each.
    assert prompt.count("<|vision_start|>") == prompt.count("<|vision_end|>")
    if family == "qwen3_vl":
        assert prompt.count("<|vision_start|>") == 8
        assert "<0.2 seconds><|vision_start|>" in prompt and "<7.2 seconds>" in prompt
    else:
        assert prompt.count("<|vision_start|>") == 1
        if family == "qwen2_5_vl":
            assert inputs["second_per_grid_ts"].tolist() == [1.0]


def test_greedy_answers_repeat_and_system_prompt_replaces_the_default(vlm, scans):
    family, model, processor = vlm
    image, _ = scans
    first = ask(model, processor, "Normal?", image=image, max_new_tokens=MAX_NEW)
    assert ask(model, processor, "Normal?", image=image, max_new_tokens=MAX_NEW) == first

    messages = build_messages("Normal?", system="You are a radiologist.")
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a radiologist.<|im_end|>\n")
    assert "helpful assistant" not in prompt


def test_text_only_and_image_plus_video(vlm, scans):
    _, model, processor = vlm
    image, frames = scans
    text_only = ask(model, processor, "Define effusion.", max_new_tokens=2)
    assert text_only.vision_tokens == 0 and text_only.new_tokens <= 2
    both = ask(model, processor, "Compare.", image=image, video=frames[:4], max_new_tokens=2)
    assert both.vision_tokens > 0
    # An odd number of frames (even one) is padded with the last frame, as qwen-vl-utils does.
    single = ask(model, processor, "One slice.", video=frames[:1], max_new_tokens=1)
    assert (
        single.vision_tokens
        == ask(model, processor, "Two.", video=frames[:2], max_new_tokens=1).vision_tokens
    )
    with pytest.raises(ValueError, match="frame"):
        ask(model, processor, "Q", video=[])
    with pytest.raises(TypeError, match="PIL"):
        ask(model, processor, "Q", image="scan.png")

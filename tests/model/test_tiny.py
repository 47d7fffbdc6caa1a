"""Tiny offline Qwen-VL builds: layout, size, determinism, cache, tokenizer and chat template."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoProcessor, GenerationConfig

from medvl.model import FAMILIES, build_tiny_model, tiny_model_dir
from medvl.model.tiny import MARKER
from medvl.model.tiny.tokenizer import added_tokens

PROCESSORS = {
    "qwen2_vl": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}
TEXT = (
    "Left knee: <think>medial meniscus tear</think><answer>B</answer>"
    ' {"bbox_2d": [1, 20, 300, 4000]} é 漢字 \t\n'
)
QWEN2_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_a_real_checkpoint_with_consistent_token_ids(family, tiny_model_path):
    path = tiny_model_path(family)
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer

    assert config.model_type == family
    processor_cls, video_cls = PROCESSORS[family]
    assert type(processor).__name__ == processor_cls
    assert type(processor.video_processor).__name__ == video_cls
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(tok).__name__ == "Qwen2Tokenizer"

    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert config.text_config.vocab_size >= len(tok)

    gen = GenerationConfig.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id in gen.eos_token_id
    assert tok.pad_token == "<|endoftext|>" and gen.pad_token_id == tok.pad_token_id
    assert tok.bos_token is None and gen.bos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert processor.chat_template and tok.chat_template == processor.chat_template
    assert json.loads((path / MARKER).read_text())["family"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_and_vision_settings_fit_the_architecture(family, tiny_model_path):
    config = AutoConfig.from_pretrained(tiny_model_path(family))
    text, vision = config.text_config, config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert vision.patch_size == (16 if family == "qwen3_vl" else 14)
    if family == "qwen3_vl":
        assert text.rope_parameters["mrope_interleaved"]
        assert all(i < vision.depth for i in vision.deepstack_visual_indexes)
    if family == "qwen2_5_vl":
        assert all(i < vision.depth for i in vision.fullatt_block_indexes)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_weights_are_under_one_megabyte(family, tiny_model_path):
    assert os.path.getsize(tiny_model_path(family) / "model.safetensors") < 1_000_000


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic_for_a_seed(family, tmp_path, tiny_model_path):
    first = tiny_model_path(family)
    again = build_tiny_model(family, cache_dir=tmp_path / "again")
    other = build_tiny_model(family, cache_dir=tmp_path, seed=1)
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (again / weights).read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    assert (first / weights).read_bytes() != (other / weights).read_bytes()
    assert other.name == f"{family}-tiny-seed1"


def test_cache_location_argument_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "env"))
    assert tiny_model_dir("qwen3_vl", "small") == tmp_path / "env" / "tiny" / "qwen3_vl-small"
    assert tiny_model_dir(cache_dir=tmp_path) == tmp_path / "tiny" / "qwen2_5_vl-tiny"
    monkeypatch.delenv("MEDVL_CACHE")
    assert tiny_model_dir().parent.parent == Path.home() / ".cache" / "medvl"
    with pytest.raises(ValueError, match="qwen2_vl"):
        tiny_model_dir("llava")
    with pytest.raises(ValueError, match="tiny"):
        tiny_model_dir(size="huge")


def test_complete_build_is_reused_and_half_builds_are_replaced(tmp_path):
    path = build_tiny_model("qwen2_vl", cache_dir=tmp_path)
    stamp = (path / MARKER).stat().st_mtime_ns
    assert build_tiny_model("qwen2_vl", cache_dir=tmp_path) == path
    assert (path / MARKER).stat().st_mtime_ns == stamp

    assert build_tiny_model("qwen2_vl", cache_dir=tmp_path, force=True) == path
    assert (path / MARKER).stat().st_mtime_ns != stamp

    (path / MARKER).unlink()  # what a folder copied by hand, or an old layout, looks like
    (path / "model.safetensors").write_bytes(b"garbage")
    build_tiny_model("qwen2_vl", cache_dir=tmp_path)
    assert (path / MARKER).is_file()
    assert (path / "model.safetensors").stat().st_size > 1000
    # Nothing left behind but the build itself.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_round_trips_and_keeps_special_tokens_whole(family, tiny_model_path):
    tok = AutoProcessor.from_pretrained(tiny_model_path(family)).tokenizer
    ids = tok(TEXT)["input_ids"]
    assert tok.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode())  # BPE merged something

    tokens = added_tokens(family)
    first = tok.convert_tokens_to_ids(tokens[0][0])
    for offset, (token, special) in enumerate(tokens):
        assert tok(token, add_special_tokens=False)["input_ids"] == [first + offset], token
        shown = tok.decode([first + offset], skip_special_tokens=True)
        assert shown == ("" if special else token)
    assert ("<think>" in dict(tokens)) == (family == "qwen3_vl")
    assert len(tok) == first + len(tokens)


def _render(processor, content, **kwargs):
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_layout(family, tiny_model_path):
    processor = AutoProcessor.from_pretrained(tiny_model_path(family))
    system = "" if family == "qwen3_vl" else QWEN2_SYSTEM
    content = [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Is there a tear?"}]
    assert _render(processor, content, add_generation_prompt=True) == (
        system + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|>Is there a tear?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>A</answer>"}]},
    ]
    assert processor.apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<answer>A</answer><|im_end|>\n"
    )
    numbered = _render(processor, [{"type": "image"}, {"type": "image"}], add_vision_id=True)
    assert "Picture 1: <|vision_start|>" in numbered and "Picture 2: <|vision_start|>" in numbered


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_on_datasets_rows_inserts_no_stray_pads(family, tiny_model_path):
    processor = AutoProcessor.from_pretrained(tiny_model_path(family))
    # A `datasets` row carries every key of the column schema; `type` decides.
    row = [
        {"type": "image", "image": None, "video": None, "text": None},
        {"type": "text", "image": None, "video": None, "text": "What is seen?"},
    ]
    prompt = _render(processor, row)
    assert prompt.count("<|image_pad|>") == 1
    assert "<|video_pad|>" not in prompt and "None" not in prompt
    assert "What is seen?" in prompt

    video_row = [{"type": "video", "image": None, "video": None, "text": None}]
    assert _render(processor, video_row).count("<|video_pad|>") == 1
    assert "<|image_pad|>" not in _render(processor, video_row)

    # Without `type`, the key that holds a value decides (qwen-vl-utils style).
    untyped = [{"image": "scan.png"}, {"text": "Describe."}]
    assert _render(processor, untyped).count("<|image_pad|>") == 1


def test_small_size_has_a_few_million_parameters(tmp_path):
    for family in FAMILIES:
        path = build_tiny_model(family, "small", cache_dir=tmp_path)
        info = json.loads((path / MARKER).read_text())
        config = AutoConfig.from_pretrained(path)
        assert 2_000_000 < info["num_parameters"] < 10_000_000, family
        assert config.text_config.hidden_size == 256
        assert config.text_config.num_hidden_layers == 4
        assert config.vision_config.depth == 4

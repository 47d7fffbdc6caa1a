"""load_vlm / detect_family on tiny checkpoints of every family, and their error messages."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import torch
from transformers import AutoConfig

from medvl.model import FAMILIES, ModelLoadError, detect_family, load_vlm, resolve_dtype

MODEL_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_load_each_family_from_its_folder(family, tiny_model_path):
    path = tiny_model_path(family)
    model, processor = load_vlm(path, device="cpu")
    assert type(model).__name__ == MODEL_CLASSES[family]
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert processor.tokenizer.padding_side == "left"
    assert processor.image_token_id == model.config.image_token_id
    # A string path and a "~"-free Path take the same route.
    assert type(load_vlm(str(path))[0]) is type(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family_from_path_config_and_dict(family, tiny_model_path):
    path = tiny_model_path(family)
    config = AutoConfig.from_pretrained(path)
    assert detect_family(path) == detect_family(str(path)) == family
    assert detect_family(config) == detect_family(config.to_dict()) == family
    assert detect_family({"model_type": "qwen3_vl_moe"}) == "qwen3_vl"


def test_dtype_names_and_attention(tiny_model_path):
    path = tiny_model_path("qwen2_5_vl")
    model, _ = load_vlm(path, dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert resolve_dtype("fp32") is torch.float32
    assert resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("auto") == "auto"
    assert resolve_dtype(None, "cpu") is torch.float32
    with pytest.raises(ValueError, match="float64x"):
        resolve_dtype("float64x")


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    for arg in (missing, str(missing)):
        with pytest.raises(ModelLoadError, match="no such folder") as err:
            load_vlm(arg)
        assert str(missing) in str(err.value) and "qwen2_5_vl" in str(err.value)


def test_folder_without_config_names_the_path(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no config.json") as err:
        load_vlm(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("model_type", ["bert", "llama", None])
def test_non_qwen_vl_config_names_the_path_and_what_is_supported(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ModelLoadError) as err:
        load_vlm(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and repr(model_type) in message
    assert all(f in message for f in FAMILIES)
    with pytest.raises(ModelLoadError, match=str(model_type)):
        detect_family(tmp_path)


def test_unknown_hub_id_offline_fails_without_download():
    # conftest sets HF_HUB_OFFLINE before huggingface_hub is imported; never reach the network.
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    with pytest.raises(ModelLoadError, match="medvl-test/does-not-exist"):
        load_vlm("medvl-test/does-not-exist")


def test_model_load_error_is_a_value_error():
    assert issubclass(ModelLoadError, ValueError)


def test_resolve_model_builds_a_tiny_spec_and_passes_other_names_through(tmp_path):
    from medvl.model import resolve_model, tiny_model_dir

    assert resolve_model("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model("tiny:qwen2_5_vl") == tiny_model_dir("qwen2_5_vl", "tiny")
    assert resolve_model("tiny:qwen2_5_vl-tiny") == tiny_model_dir("qwen2_5_vl", "tiny")
    with pytest.raises(ValueError, match="unknown family 'gpt'"):
        resolve_model("tiny:gpt-tiny")


def test_unwrap_reaches_the_transformers_model_through_peft_and_compile(tiny_model_path):
    from peft import LoraConfig, get_peft_model

    from medvl.model.loading import unwrap

    model, _ = load_vlm(tiny_model_path("qwen2_5_vl", "tiny"), device="cpu")
    assert unwrap(model) is model
    compiled = torch.compile(model)  # wrapped, not compiled until called
    assert compiled is not model and unwrap(compiled) is model
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert unwrap(peft_model) is model

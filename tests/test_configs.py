"""Every file in configs/ loads and builds everything short of real weights."""

from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file

from medvl.eval.runner import EvalConfig
from medvl.model.architectures import PUBLISHED, random_init_model
from medvl.model.lora import lora_config
from medvl.train.grpo_config import GRPOConfig
from medvl.train.sft_config import SFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KINDS = {"sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig}


def _training_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.glob("*.yaml") if p.name.split("_")[0] in ("sft", "grpo"))


def test_every_config_has_a_known_kind() -> None:
    names = [p.name for p in CONFIGS.glob("*.yaml")]
    assert names, "configs/ is empty"
    assert all(n.split("_")[0] in KINDS for n in names), names


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    config = KINDS[path.name.split("_")[0]].from_yaml(path)
    assert config.to_dict()  # every field coerced and checked by __post_init__


def _real_model(path: Path) -> str | None:
    config = KINDS[path.name.split("_")[0]].from_yaml(path)
    if config.model in PUBLISHED:
        return config.model
    # A GRPO recipe starts from its SFT recipe's output: build that recipe's model.
    for sft in _training_configs():
        sft_config = SFTConfig.from_yaml(sft) if sft.name.startswith("sft") else None
        if sft_config and config.model.startswith(sft_config.output_dir):
            return sft_config.model if sft_config.model in PUBLISHED else None
    return None


GPU_RECIPES = [p for p in _training_configs() if _real_model(p)]


def test_gpu_recipes_cover_the_published_families() -> None:
    models = {_real_model(p) for p in GPU_RECIPES}
    assert {"Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct",
            "Qwen/Qwen3-VL-4B-Instruct"} <= models  # fmt: skip


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: p.name)
def test_gpu_recipe_builds_its_model_with_lora(path: Path) -> None:
    """The named architecture at full size on the meta device, with the recipe's LoRA."""
    from peft import get_peft_model

    config = KINDS[path.name.split("_")[0]].from_yaml(path)
    model = random_init_model(_real_model(path), dtype=torch.bfloat16, device="meta")
    total = sum(p.numel() for p in model.parameters())
    if config.lora is None:
        return
    peft_model = get_peft_model(model, lora_config(config.lora))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.1 * total
    # LoRA reached every language-model projection the recipe names, and nothing in the vision.
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1]
               for n, _ in peft_model.named_parameters() if ".lora_A" in n}  # fmt: skip
    assert wrapped == set(config.lora["target_modules"])
    assert not any("visual" in n for n, _ in peft_model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_accelerate_config_loads(path: Path) -> None:
    config = load_config_from_file(str(path))
    assert config.num_processes == 8
    assert config.mixed_precision == "bf16"
    if config.distributed_type == "FSDP":
        import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

        for cls in config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(qwen, cls), cls
    else:
        assert config.deepspeed_config["zero_stage"] == 3

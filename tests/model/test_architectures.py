"""The published architectures: real sizes on the meta device, a shallow copy that runs."""

import pytest
import torch

from medvl.model.architectures import PUBLISHED, published_config, random_init_model

# Parameter counts Qwen publishes on each model card (billions), e.g. "3.75B params".
PUBLISHED_BILLIONS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.75,
    "Qwen/Qwen2.5-VL-7B-Instruct": 8.29,
    "Qwen/Qwen3-VL-4B-Instruct": 4.44,
    "Qwen/Qwen3-VL-8B-Instruct": 8.77,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_build_has_the_published_parameter_count(name: str) -> None:
    model = random_init_model(name, device="meta")
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(PUBLISHED_BILLIONS[name], rel=0.01)
    assert all(p.is_meta for p in model.parameters())


def test_shallow_copy_keeps_widths_and_drops_missing_block_indices() -> None:
    config = published_config("Qwen/Qwen3-VL-8B-Instruct", text_layers=2, vision_depth=10)
    assert config.text_config.num_hidden_layers == 2
    assert config.text_config.hidden_size == 4096
    assert config.vision_config.depth == 10
    assert config.vision_config.deepstack_visual_indexes == [8]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="Qwen2.5-VL-3B-Instruct"):
        published_config("Qwen/Qwen9-VL")


def test_shallow_random_init_model_runs_a_forward_with_an_image() -> None:
    name = "Qwen/Qwen2.5-VL-3B-Instruct"
    model = random_init_model(name, text_layers=1, vision_depth=1, dtype=torch.float32).eval()
    config = model.config
    grid = torch.tensor([[1, 4, 4]])  # one frame of 4 x 4 patches -> 4 merged image tokens
    patch = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size**2
    pixels = torch.randn(16, patch)
    ids = torch.tensor([[1, config.vision_start_token_id] + [config.image_token_id] * 4
                        + [config.vision_end_token_id, 2]])  # fmt: skip
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid)
    assert out.logits.shape == (1, ids.shape[1], config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()

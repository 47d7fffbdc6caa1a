"""MedVLM itself: forward losses and gradients (LoRA and full), checkpoints that load back to
identical outputs."""

from __future__ import annotations

import os

import pytest
import torch

from medvl.model import MedVLM


def _randomise_heads(vlm: MedVLM, seed: int = 1) -> None:
    """Heads start with zero last layers (constant outputs); make outputs input-dependent."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def test_forward_loss_and_gradients_with_lora(tiny_model_path, items):
    grounded = MedVLM.from_pretrained(
        tiny_model_path("qwen2_5_vl"), lora={"r": 4}, heads=["box", "mask"]
    )
    grounded.train()
    try:
        grounded.zero_grad()
        out = grounded(**grounded.collate(items))
        assert torch.isfinite(out.loss)
        for part in (out.lm_loss, out.box_loss, out.mask_loss):
            assert part is not None and torch.isfinite(part)
        cfg = grounded.config
        expected = out.lm_loss + cfg.box_loss_weight * out.box_loss + \
            cfg.mask_loss_weight * out.mask_loss  # fmt: skip
        assert torch.allclose(out.loss, expected)
        out.loss.backward()
    finally:
        grounded.eval()
    trainable = {n for n, p in grounded.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in grounded.named_parameters() if p.grad is not None}
    assert with_grad == trainable and trainable == {
        n for n, _ in grounded.named_parameters()
        if "lora_" in n or "trainable_tokens" in n or n.startswith("heads.")
    }  # fmt: skip
    for head in grounded.heads.values():  # zero-initialised last layers: only they move first
        assert any(p.grad.abs().sum() > 0 for p in head.parameters())
    assert any("trainable_tokens" in n for n in trainable)
    assert len(grounded.trainable_parameters()) == len(trainable)


def test_full_fine_tuning_trains_everything(tiny_model_path, items):
    plain = MedVLM.from_pretrained(tiny_model_path("qwen3_vl"))
    batch = plain.collate(items)
    assert "box_targets" not in batch and "mask_targets" not in batch
    out = plain(**batch)
    assert torch.isfinite(out.loss) and out.box_loss is None and out.mask_loss is None
    assert len(plain.trainable_parameters()) == len(list(plain.parameters()))


# -- checkpoints ----------------------------------------------------------------------------


def _outputs(vlm: MedVLM, batch: dict) -> tuple:
    with torch.no_grad():
        out = vlm(**batch)
    return out.logits, out.boxes, out.mask_logits


def _same(a: tuple, b: tuple) -> bool:
    logits_a, boxes_a, masks_a = a
    logits_b, boxes_b, masks_b = b
    pairs = zip(masks_a or [], masks_b or [], strict=True)
    masks = all((x is None and y is None) or torch.equal(x, y) for x, y in pairs)
    return torch.equal(logits_a, logits_b) and torch.equal(boxes_a, boxes_b) and masks


def test_save_and_load_give_identical_outputs(tiny_model_path, items, tmp_path):
    vlm = MedVLM.from_pretrained(tiny_model_path("qwen2_vl"), heads=["box", "mask"])
    _randomise_heads(vlm)
    batch = vlm.collate(items)
    before = _outputs(vlm, batch)
    folder = vlm.save_pretrained(tmp_path / "ckpt")
    names = set(os.listdir(folder))
    assert {"model.safetensors", "heads.safetensors", "medvl_config.json"} <= names
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left
    loaded = MedVLM.from_pretrained(folder)
    assert loaded.heads_config == vlm.heads_config and loaded.family == vlm.family
    # A full checkpoint is the base of whatever is built on it next (e.g. a new adapter).
    assert loaded.config.base_model == str(folder.resolve())
    assert _same(before, _outputs(loaded, loaded.collate(items)))
    # Saving into the folder again leaves the same files and the same model.
    assert loaded.save_pretrained(folder) == folder
    assert set(os.listdir(folder)) == names
    assert _same(before, _outputs(MedVLM.from_pretrained(folder), batch))


def test_lora_adapter_round_trips(tiny_model_path, items, tmp_path):
    vlm = MedVLM.from_pretrained(tiny_model_path("qwen3_vl"), lora={"r": 4}, heads=["box"])
    _randomise_heads(vlm)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a trained-looking adapter: B (zero at init) and the token rows
        for name, p in vlm.model.named_parameters():
            if "lora_B" in name or "trainable_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    batch = vlm.collate(items)
    before = _outputs(vlm, batch)
    staging = tmp_path / "staging"  # a trainer's folder that already holds its own files
    staging.mkdir()
    (staging / "config.yaml").write_text("lr: 1\n")
    folder = vlm.save_pretrained(staging)
    names = set(os.listdir(folder))
    assert {"adapter_model.safetensors", "adapter_config.json", "heads.safetensors",
            "medvl_config.json", "config.yaml"} <= names  # fmt: skip
    assert "model.safetensors" not in names
    base_size = os.path.getsize(tiny_model_path("qwen3_vl") / "model.safetensors")
    assert os.path.getsize(folder / "adapter_model.safetensors") < base_size / 2
    loaded = MedVLM.from_pretrained(folder)
    assert type(loaded.model).__name__ == "PeftModel"
    assert _same(before, _outputs(loaded, loaded.collate(items)))
    with pytest.raises(ValueError, match="LoRA adapter already"):
        MedVLM.from_pretrained(folder, lora={"r": 2})

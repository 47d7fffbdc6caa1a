"""medvl.model.heads.config: heads and their HeadsConfig saved and loaded."""

from __future__ import annotations

import json

import pytest
import torch
from heads_helpers import HIDDEN, scramble

from medvl.model.heads import (
    HeadsConfig,
    build_heads,
    load_heads,
    save_heads,
)

# --- persistence -------------------------------------------------------------------------------


def test_heads_save_and_load_round_trip(tmp_path):
    config = HeadsConfig(hidden_size=HIDDEN, box_dims=(3, 2), mask=True, mask_dim=16)
    assert config.head_names == ["box2d", "box3d", "mask"]
    assert config.tokens == ["<|box|>", "<|seg|>"]
    heads = build_heads(config)
    for seed, head in enumerate(heads.values()):
        scramble(head, std=0.2, seed=seed)

    path = save_heads(heads, tmp_path / "ckpt" / "heads.safetensors", config)
    assert [p.name for p in path.parent.iterdir()] == ["heads.safetensors"]  # no temporary left
    states, grid = torch.randn(5, HIDDEN), torch.randn(2, 3, 4, HIDDEN)
    for loaded in (load_heads(path), load_heads(path, config)):
        assert list(loaded) == list(heads)
        with torch.no_grad():
            for name in ("box2d", "box3d"):
                torch.testing.assert_close(
                    loaded[name](states), heads[name](states), rtol=0, atol=0
                )
            torch.testing.assert_close(
                loaded["mask"](states, grid, (8, 8)),
                heads["mask"](states, grid, (8, 8)),
                rtol=0,
                atol=0,
            )

    with pytest.raises(ValueError, match="does not match heads"):
        load_heads(path, HeadsConfig(hidden_size=HIDDEN, box_dims=(2,)))
    bare = save_heads({"box2d": heads["box2d"]}, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="no HeadsConfig"):
        load_heads(bare)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_heads_config_file_round_trip(tmp_path, suffix):
    config = HeadsConfig(hidden_size=2048, box_dims=[3], mask=True, box_giou_weight=1.5)
    config.save(tmp_path / f"heads{suffix}")
    assert HeadsConfig.load(tmp_path / f"heads{suffix}") == config
    if suffix == ".json":
        assert json.loads((tmp_path / "heads.json").read_text())["box_dims"] == [3]
    with pytest.raises(ValueError, match="unknown HeadsConfig keys"):
        HeadsConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="box_dims"):
        HeadsConfig(hidden_size=8, box_dims=(4,))

"""medvl.scans.views.settings: one ViewSettings for the dataset, the prompts and the model."""

from __future__ import annotations

import pytest
import torch

from medvl.data.dataset import DatasetConfig
from medvl.model.medvlm_config import MedVLMConfig
from medvl.model.prompts import PromptSettings
from medvl.scans.views import (
    FrameView,
    MIPView,
    MontageView,
    SliceView,
    ViewSettings,
    show_volume,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"view": "cine"}, "view must be one of frames, montage, slice, mip; got 'cine'"),
        ({"n_frames": 3}, "n_frames must be even and >= 2 for frames, got 3"),
        ({"view": "montage", "n_frames": 0}, "n_frames must be >= 1, got 0"),
        ({"axis": 3}, "axis must be 0, 1 or 2, got 3"),
        ({"size": 0}, "size must be None or >= 1, got 0"),
    ],
)
@pytest.mark.parametrize("kind", [ViewSettings, DatasetConfig, PromptSettings])
def test_every_settings_type_checks_the_view_fields_the_same_way(kind, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        kind(**kwargs)


def test_a_model_config_takes_its_view_from_the_training_data():
    model = MedVLMConfig(family="qwen2_5_vl", base_model="x")
    model.set_view(DatasetConfig(view="montage", n_frames=9, axis=0, size=96, cache="memory"))
    assert model.view_settings == ViewSettings("montage", 9, 0, 96)
    assert model.prompt == PromptSettings("montage", 9, 0, 96, reasoning=True, video_fps=2.0)
    again = MedVLMConfig.from_dict(model.to_dict())
    assert again == model and again.view_settings == ViewSettings("montage", 9, 0, 96)


@pytest.mark.parametrize(
    ("view", "kind"),
    [("frames", FrameView), ("montage", MontageView), ("slice", SliceView), ("mip", MIPView)],
)
def test_show_volume_gives_the_named_view(view, kind):
    volume = torch.rand(1, 20, 24, 12)
    shown = show_volume(volume, ViewSettings(view, 4, axis=2, size=32))
    assert isinstance(shown, kind)
    pictures = shown.frames if view == "frames" else [shown.image]
    assert len(pictures) == (4 if view == "frames" else 1)
    assert max(pictures[0].size) == (32 if view != "montage" else max(pictures[0].size))

"""medvl.model.inputs: scans and images to the pictures, messages and inputs the model takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.model.inputs import as_scan, build_messages, show_scan
from medvl.scans.views import FrameView, MontageView, ViewSettings


@pytest.fixture(scope="module")
def scans():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8))
    return image, [Image.fromarray(s) for s in rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)]


def test_build_messages_in_qwen_vl_utils_form(scans):
    image, frames = scans
    messages = build_messages("Q", image=image, video=frames, system="S")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [item["type"] for item in messages[1]["content"]] == ["image", "video", "text"]
    assert messages[1]["content"][0]["image"] is image


def test_pictures_already_built_go_first():
    picture = {"type": "video", "video": ["f0", "f1"]}
    messages = build_messages("Where?", pictures=[picture], system=None)
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"] == [picture, {"type": "text", "text": "Where?"}]


def test_as_scan_gives_a_channel_and_names_what_it_cannot_read():
    assert tuple(as_scan(np.zeros((5, 6), dtype=np.float32)).shape) == (1, 5, 6)
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 3, 4, 5\)"):
        as_scan(torch.zeros(1, 2, 3, 4, 5))
    with pytest.raises(TypeError, match="got list"):
        as_scan([1, 2, 3])


def test_show_scan_picks_the_view_the_settings_name():
    volume = torch.rand(1, 16, 20, 12)
    frames = show_scan(volume, ViewSettings("frames", 4, size=32))
    assert isinstance(frames.view, FrameView) and len(frames.content["video"]) == 4
    assert frames.scan_ndim == 3 and frames.content["type"] == "video"
    montage = show_scan(volume, ViewSettings("montage", 4))
    assert isinstance(montage.view, MontageView) and montage.content["type"] == "image"
    flat = show_scan(torch.rand(1, 30, 20))
    assert flat.view is None and flat.scan_ndim == 2 and flat.content["image"].size == (30, 20)

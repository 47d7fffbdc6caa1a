"""Native box text of each family: round trips, the processor's resize, and hostile parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medvl.model import FAMILIES, load_vlm
from medvl.model.grounding import (
    format_box,
    format_box_3d,
    format_frame_boxes,
    from_native,
    parse_box,
    parse_box_3d,
    parse_boxes,
    resized_image_size,
    to_native,
)
from medvl.scans.views import volume_to_frames

# Sizes as the model sees them: square, non-square both ways, tiny, and not multiples of 28.
SIZES = [(448, 336), (28, 56), (1288, 28), (1000, 1000), (2, 3), (1, 1), (97, 13)]
QWEN25 = (448, 336)  # a resized Qwen2.5-VL image for tests that need one
NATIVE = {"qwen2_vl": None, "qwen2_5_vl": QWEN25, "qwen3_vl": None}


@st.composite
def unit_boxes(draw, dims=2):
    """Normalised boxes, min corner first, degenerate ones included."""
    lo, hi = [], []
    for _ in range(dims):
        a, b = sorted(draw(st.floats(0, 1, allow_nan=False)) for _ in range(2))
        lo.append(a)
        hi.append(b)
    return lo + hi


def _steps(family, size):
    if family == "qwen2_5_vl":
        return 1 / size[0], 1 / size[1]
    return 1 / 1000, 1 / 1000


def _assert_close(box, back, steps):
    assert back is not None
    for i, (a, b) in enumerate(zip(box, back, strict=True)):
        assert abs(a - b) <= steps[i % 2] + 1e-9, (box, back)
    assert back[0] < back[2] and back[1] < back[3]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", SIZES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(box=unit_boxes(), label=st.none() | st.text(max_size=12))
def test_2d_round_trip_within_one_step(family, size, box, label):
    steps = _steps(family, size)
    back = parse_box(format_box(box, family, size, label=label), family, size)
    _assert_close(box, back, steps)
    _assert_close(box, from_native(to_native(box, family, size), family, size), steps)


@settings(max_examples=200, deadline=None)
@given(box=unit_boxes(dims=3), label=st.none() | st.text(max_size=12))
def test_3d_round_trip_within_a_thousandth(box, label):
    text = format_box_3d(box, label=label)
    back = parse_box_3d(text)
    assert back is not None
    assert all(abs(a - b) <= 1e-3 + 1e-9 for a, b in zip(box, back, strict=True))
    assert all(back[i] < back[i + 3] for i in range(3))


def test_native_forms_look_as_documented():
    box = [0.1, 0.2, 0.5, 0.75]
    assert format_box(box, "qwen2_vl", label="tear") == (
        "<|object_ref_start|>tear<|object_ref_end|><|box_start|>(100,200),(500,750)<|box_end|>"
    )
    assert format_box(box, "qwen3_vl") == '{"bbox_2d": [100, 200, 500, 750]}'
    assert format_box(box, "qwen2_5_vl", (400, 200), "é") == (
        '{"bbox_2d": [40, 40, 200, 150], "label": "é"}'
    )
    assert format_box_3d([0, 0.25, 0.5, 1, 0.75, 0.5]) == (
        '{"bbox_3d": [0.000, 0.250, 0.500, 1.000, 0.750, 0.501]}'  # flat z: one step
    )
    assert to_native([1, 1, 1, 1], "qwen3_vl") == [999, 999, 1000, 1000]


@pytest.fixture(scope="module", params=FAMILIES)
def processor(request, tiny_model_path):
    return load_vlm(tiny_model_path(request.param), device="cpu")[1]


@pytest.mark.parametrize("width, height", [(128, 128), (200, 100), (37, 301), (640, 480), (9, 9)])
def test_resized_size_is_what_the_processor_produces(processor, width, height):
    image = Image.new("RGB", (width, height))
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    patch = processor.image_processor.patch_size
    expected = (int(grid[2]) * patch, int(grid[1]) * patch)
    assert resized_image_size(processor, width, height) == expected
    assert resized_image_size(processor.image_processor, width, height) == expected


def test_resized_size_from_a_family_name_uses_official_defaults():
    assert resized_image_size("qwen2_5_vl", 640, 480) == (644, 476)  # multiples of 28
    assert resized_image_size("qwen3_vl", 640, 480) == (640, 480)  # multiples of 32
    w, h = resized_image_size("qwen3_vl", 100, 100)  # below 256*256 pixels: scaled up
    assert w * h >= 256 * 256 and w % 32 == h % 32 == 0


# Each must give None for every family (qwen2_5_vl parses on a 448x336 image).
MALFORMED = [
    "",
    "   ",
    "None",
    "null",
    "{}",
    "[]",
    '{"bbox_2d": [100, 200, 300',  # truncated inside the list
    '{"bbox_2d": ',
    '{"bbox_2d": [100, 200, 300]}',  # three numbers
    '{"bbox_2d": [100, 200, 300, 400, 500]}',  # five
    '{"bbox_2d": [100, 100, 100, 300]}',  # zero width
    '{"bbox_2d": [50, 50, 50, 50]}',  # a point
    '{"bbox_2d": [-300, 10, 100, 200]}',  # far negative
    '{"bbox_2d": [NaN, 10, 100, 200]}',
    '{"bbox_2d": [nan, 10, 100, 200]}',
    '{"bbox_2d": [Infinity, 10, 100, 200]}',
    '{"bbox_2d": [1e999, 10, 100, 200]}',
    '{"bbox_2d": [10, 10, 99999999999999999999, 200]}',  # huge
    '{"bbox_2d": [10, 10, 5000, 200]}',  # far outside
    '{"bbox_2d": ["10", "20", "30", "40"]}',  # strings, not numbers
    '{"bbox_2d": [10, 20, , 40]}',
    '{"bbox_2d": [１０, ２０, ３０, ４０]}',  # full-width digits
    '{"bbox2d": [10, 20, 300, 200]}',  # misspelled keys
    '{"bbx_2d": [10, 20, 300, 200]}',
    '{"box": [10, 20, 300, 200]}',
    '{"point_2d": [10, 20]}',
    '{"bbox_3d": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}',  # a 3D box where 2D is expected
    "(10,20),(30)",
    "<|box_start|>(10,20)<|box_end|>",
    "<|box_start|><|box_end|>",
    "the lesion is in the upper left",
    "x1=10, y1=20, x2=30, y2=40",
    "```json\n```",
    "[[[[[[",
    "\u202e\u0000\ufeff💥",
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_text_gives_none(family, text):
    assert len(MALFORMED) >= 30
    assert parse_box(text, family, NATIVE[family]) is None
    assert parse_boxes(text, family, NATIVE[family]) == []


@pytest.mark.parametrize("value", [None, 42, b'{"bbox_2d": [1, 2, 3, 4]}', ["[1,2,3,4]"]])
def test_non_strings_give_none(value):
    assert parse_box(value, "qwen3_vl") is None
    assert parse_box_3d(value) is None


LENIENT = {
    "fenced": '```json\n[\n  {"bbox_2d": [100, 200, 300, 400], "label": "tear"}\n]\n```',
    "single quotes": "{'bbox_2d': [100, 200, 300, 400], 'label': 'tear'}",
    "trailing commas": '{"bbox_2d": [100, 200, 300, 400,],}',
    "prose around": 'Sure! The tear is here: {"bbox_2d": [100,200,300,400]} as shown.',
    "swapped corners": '{"bbox_2d": [300, 400, 100, 200]}',
    "label cut off": '{"bbox_2d": [100, 200, 300, 400], "label": "medial men',
    "tokens": "<|object_ref_start|>tear<|object_ref_end|>"
    "<|box_start|>(100,200),(300,400)<|box_end|>",
    "tokens stripped by decode": "tear(100,200),(300,400)",
    "bare list": "[100, 200, 300, 400]",
    "floats": '{"bbox_2d": [100.0, 200.4, 299.6, 400]}',
}


@pytest.mark.parametrize("text", LENIENT.values(), ids=LENIENT.keys())
def test_common_model_quirks_are_read(text):
    assert parse_box(text, "qwen3_vl") == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-3)


def test_slightly_outside_is_clipped_far_outside_rejected():
    assert parse_box('{"bbox_2d": [-5, 0, 1010, 500]}', "qwen3_vl") == [0, 0, 1, 0.5]
    assert parse_box('{"bbox_2d": [-50, 0, 500, 500]}', "qwen3_vl") is None
    assert parse_box('{"bbox_2d": [0, 0, 452, 336]}', "qwen2_5_vl", QWEN25) == [0, 0, 1, 1]
    assert parse_box('{"bbox_2d": [0, 0, 500, 336]}', "qwen2_5_vl", QWEN25) is None


def test_several_boxes_first_and_all_in_order():
    text = (
        '[{"bbox_2d": [0, 0, 100, 100]}, {"bbox_2d": [5, 5, 5, 5]},'
        ' {"bbox_2d": [500, 500, 1000, 1000]}] and (200,200),(300,300)'
    )
    assert parse_boxes(text, "qwen3_vl") == [
        [0, 0, 0.1, 0.1],
        [0.5, 0.5, 1, 1],
        [0.2, 0.2, 0.3, 0.3],
    ]
    assert parse_box(text, "qwen3_vl") == [0, 0, 0.1, 0.1]


def test_the_family_decides_what_numbers_mean():
    text = '{"bbox_2d": [112, 84, 224, 168]}'
    assert parse_box(text, "qwen2_5_vl", QWEN25) == [0.25, 0.25, 0.5, 0.5]
    assert parse_box(text, "qwen3_vl") == pytest.approx([0.112, 0.084, 0.224, 0.168])


def test_3d_parsing_rejects_qwen3_camera_boxes_and_malformed():
    assert parse_box_3d('{"bbox_3d": [0.2, 0.1, 0.3, 0.4, 0.5, 0.6]}') == [
        0.2,
        0.1,
        0.3,
        0.4,
        0.5,
        0.6,
    ]
    assert parse_box_3d("{'bbox_3d': [0.4, 0.5, 0.6, 0.2, 0.1, 0.3,]}") == [
        0.2, 0.1, 0.3, 0.4, 0.5, 0.6,
    ]  # fmt: skip
    camera = '[{"bbox_3d": [1.2, 0.3, 4.5, 0.6, 0.4, 1.1, 0, 0.1, 1.57], "label": "car"}]'
    for text in [
        camera,
        '{"bbox_3d": [0.1, 0.2, 0.3]}',
        '{"bbox_3d": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}',
        '{"bbox_3d": [0, 0, 0, 2, 1, 1]}',
        '{"bbox_2d": [1, 2, 3, 4]}',
        "",
    ]:
        assert parse_box_3d(text) is None, text


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=200)
    | st.text(alphabet="{}[]()<>|,:.-+eE\"' 0123456789bbox_2d3dlabel\n`json", max_size=120)
)
def test_parsing_random_text_never_raises(text):
    for family in FAMILIES:
        for box in parse_boxes(text, family, QWEN25):
            assert all(0 <= v <= 1 for v in box) and box[0] < box[2] and box[1] < box[3]
    box3 = parse_box_3d(text)
    assert box3 is None or all(box3[i] < box3[i + 3] for i in range(3))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown model family"):
        format_box([0, 0, 1, 1], "llava")
    with pytest.raises(ValueError, match="image_size"):
        parse_box('{"bbox_2d": [1, 2, 3, 4]}', "qwen2_5_vl")
    with pytest.raises(ValueError, match="normalised box"):
        format_box([0, 0, 1.5, 1], "qwen3_vl")
    with pytest.raises(ValueError, match="min corner"):
        format_box_3d([0.5, 0, 0, 0.4, 1, 1])
    assert from_native([float("nan"), 0, 1, 1], "qwen3_vl") is None
    assert from_native(["a", 0, 1, 1], "qwen3_vl") is None


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_boxes_render_on_the_frames_that_show_the_box(family):
    rng = np.random.default_rng(0)
    view = volume_to_frames(rng.random((1, 20, 24, 16), dtype=np.float32), 8, axis=2)
    box = [0.2, 0.25, 0.3, 0.6, 0.75, 0.55]
    size = view.size if family == "qwen2_5_vl" else None
    texts = format_frame_boxes(view, box, family, size, label="lesion")
    expected = view.frame_boxes(box)
    assert texts.keys() == expected.keys() and texts
    for frame, text in texts.items():
        _assert_close(expected[frame], parse_box(text, family, size), _steps(family, view.size))

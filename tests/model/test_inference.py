"""MedVLM inference on every tiny family: answering 2D and 3D phantoms, reading replies into scan
coordinates, grounding heads, batching, streaming.

The tiny models are random, so their replies are noise: the tests check the plumbing. Replies
that matter are written by hand (``build_target``) and read through ``parse_answer``, the code
path ``MedVLM.answer`` uses, with the processor's real resized sizes.
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from medvl.model import Answer, Question, parse_answer
from medvl.model.grounding import format_box, resized_image_size
from medvl.model.prompts import build_target

N_FRAMES = 4  # as the fixtures' dataset items (tests/model/conftest.py)
MAX_NEW = 8


def _valid_box(box, n: int) -> bool:
    d = n // 2
    return (
        isinstance(box, list)
        and len(box) == n
        and all(0.0 <= v <= 1.0 for v in box)
        and all(box[i] <= box[i + d] for i in range(d))
    )


def _close(a, b, tol: float) -> bool:
    return a is not None and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True))


# -- answering ------------------------------------------------------------------------------


def test_answer_on_2d_and_3d_phantoms_is_typed_right(plain, cases):
    for anatomy, n in (("chest", 4), ("knee", 6)):
        scan = cases[anatomy]["scan"]
        ans = plain.answer(Question(scan, "Where is the lesion?", answer_type="grounding"),
                           max_new_tokens=MAX_NEW, n_frames=N_FRAMES)  # fmt: skip
        assert isinstance(ans, Answer) and isinstance(ans.raw, str) and ans.raw
        assert ans.reasoning is None or isinstance(ans.reasoning, str)
        assert ans.answer is None or isinstance(ans.answer, str)
        assert ans.box is None or _valid_box(ans.box, n)
        assert ans.mask is None and ans.box_source in (None, "text")
        # A path is read with load_scan: the same scan, the same greedy reply.
        by_path = plain.answer(
            Question(cases[anatomy]["path"], "Where is the lesion?", answer_type="grounding"),
            max_new_tokens=MAX_NEW, n_frames=N_FRAMES,
        )  # fmt: skip
        assert by_path.raw == ans.raw
    image = Image.fromarray(cases["fundus"]["case"].image.transpose(2, 1, 0))  # (W, H, C) -> PIL
    ans = plain.answer(Question(image, "Grade?", options={"A": "0", "B": "1"}),
                       max_new_tokens=MAX_NEW)  # fmt: skip
    assert isinstance(ans.raw, str)


def test_reply_text_is_read_into_scan_coordinates(plain, cases):
    family, processor = plain.family, plain.processor
    # 2D: the family's native box on the *resized* image comes back as the scan's box.
    heart = cases["chest"]["case"].structures["heart"]
    enc = plain.encode_question(
        Question(cases["chest"]["scan"], "Where is the heart?", answer_type="grounding")
    )
    resized = resized_image_size(processor, 256, 256)
    assert enc.context.image_size == resized != (256, 256) or family == "qwen3_vl"
    sample = {"question": "q", "answer_type": "grounding", "answer": "-", "box": heart,
              "reasoning": ["the heart is", "left of centre"]}  # fmt: skip
    reply = build_target(sample, family, image_size=enc.context.image_size)
    ans = parse_answer(reply, family, enc.context)
    assert ans.reasoning == "the heart is\nleft of centre" and ans.well_formed
    assert ans.answer.startswith(("{", "<|box_start|>")) and ans.box_source == "text"
    step = max(1e-3, 1 / min(enc.context.image_size))
    assert _close(ans.box, heart, step)

    # 3D, bbox_3d: volume coordinates whatever the family.
    femur = cases["knee"]["case"].structures["femur"]
    knee = cases["knee"]["scan"]
    enc = plain.encode_question(Question(knee, "Where is the femur?", answer_type="grounding"),
                                n_frames=N_FRAMES)  # fmt: skip
    reply = build_target({**sample, "box": femur, "reasoning": None}, family)
    assert '"bbox_3d"' in reply
    assert _close(parse_answer(reply, family, enc.context).box, femur, 1e-3)

    # 3D, one native 2D box per frame: back through the view's coordinate map.
    view, size = enc.context.view, enc.context.image_size
    assert size == tuple(s * processor.video_processor.patch_size
                         for s in enc.inputs["video_grid_thw"][0, [2, 1]].tolist())  # fmt: skip
    frames = view.frame_boxes(femur)
    reply = "<answer>" + "\n".join(
        f"frame {f}: {format_box(b, family, size)}" for f, b in frames.items()
    ) + "</answer>"  # fmt: skip
    expected = view.box_from_frames(frames)
    assert _close(parse_answer(reply, family, enc.context).box, expected, 1 / min(size) + 1e-3)
    assert parse_answer("no box here", family, enc.context).box is None


def test_heads_give_the_box_and_mask_of_a_grounding_question(grounded, cases):
    for anatomy, n in (("chest", 4), ("knee", 6)):
        scan = cases[anatomy]["scan"]
        ans = grounded.answer(Question(scan, "Where is the lesion?", answer_type="grounding"),
                              max_new_tokens=MAX_NEW, n_frames=N_FRAMES)  # fmt: skip
        assert ans.box_source == "head" and _valid_box(ans.box, n)
        assert ans.mask is not None and ans.mask.dtype == torch.bool
        assert tuple(ans.mask.shape) == tuple(scan.shape[1:])


# -- batching and streaming -----------------------------------------------------------------


def _questions(cases) -> list[Question]:
    return [
        Question(cases["chest"]["scan"], "Is the heart enlarged?", answer_type="closed"),
        Question(cases["knee"]["scan"], "Where is the effusion?", answer_type="grounding"),
        Question(cases["fundus"]["scan"], "Which grade?", {"A": "0", "B": "1", "C": "2"}),
    ]


def test_answer_batch_equals_single_answers(plain, cases):
    questions = _questions(cases)
    batched = plain.answer_batch(questions, max_new_tokens=MAX_NEW, n_frames=N_FRAMES)
    for q, got in zip(questions, batched, strict=True):
        single = plain.answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES)
        assert got == single
    assert len({a.raw for a in batched}) == 3  # the replies differ: the test is not vacuous


def test_stream_answer_joins_into_the_raw_answer(plain, cases):
    q = _questions(cases)[1]
    pieces = list(plain.stream_answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES))
    raw = plain.answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES).raw
    assert len(pieces) >= 1 and "".join(pieces) == raw


def test_a_streamed_reply_read_again_is_the_answer(grounded, cases):
    """The demo streams, then reads the heads from the generated ids: the same as answer()."""
    for anatomy in ("chest", "knee"):
        q = Question(cases[anatomy]["scan"], "Where is the lesion?", answer_type="grounding")
        ids: list[int] = []
        pieces = list(grounded.stream_answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES,
                                             reply_ids=ids))  # fmt: skip
        direct = grounded.answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES)
        read = grounded.read_reply(q, ids, n_frames=N_FRAMES)
        assert ids and "".join(pieces) == direct.raw == read.raw
        assert read.box_source == direct.box_source == "head"
        assert _close(read.box, direct.box, 1e-5) and read.answer == direct.answer
        assert torch.equal(read.mask, direct.mask)


def test_a_question_must_be_a_question(plain, cases):
    with pytest.raises(TypeError, match=r"expected a medvl.model.Question\(scan, text, ...\)"):
        plain.answer(cases["chest"]["scan"], "Is the heart enlarged?")

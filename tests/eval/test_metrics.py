"""Per-sample metrics (medvl.eval.metrics): correctness per answer type, token F1, overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvl.eval import (
    answer_correct,
    box_iou,
    dice,
    hd95,
    mask_iou,
    severity_abs_error,
    token_f1,
)

OPTIONS = {"A": "Meniscal tear", "B": "No tear", "C": "Bone bruise", "D": "Joint effusion"}


@pytest.mark.parametrize(
    ("pred", "answer", "kind", "expected"),
    [
        ("B", "B", "choice", True),
        ("no tear", "B", "choice", True),
        ("C", "B", "choice", False),
        ("Yes.", "yes", "closed", True),
        ("There is no tear", "no", "closed", False),  # unreadable is wrong
        ("The medial meniscus.", "medial meniscus", "open", True),
        ("lateral meniscus", "medial meniscus", "open", False),
        ("", "", "open", False),
        ("Grade 2", "2", "severity", True),
        ("2", 3, "severity", False),
        ('{"bbox_2d": [1, 2, 3, 4]}', "box", "grounding", None),
    ],
)
def test_answer_correct(pred, answer, kind, expected):
    assert answer_correct(pred, answer, kind, OPTIONS) is expected


def test_answer_correct_rejects_unknown_type():
    with pytest.raises(ValueError, match="answer_type"):
        answer_correct("B", "B", "multiple")


def test_token_f1_hand_computed():
    # pred tokens: medial meniscus tear; ref: tear of medial meniscus -> 3 common of 3 and 4.
    assert token_f1("The medial meniscus tear", "tear of the medial meniscus") == pytest.approx(
        2 * 1 * 0.75 / 1.75
    )
    assert token_f1("effusion", "effusion") == 1.0
    assert token_f1("effusion", "tear") == 0.0
    assert token_f1("", "the") == 1.0  # both empty after normalisation
    assert token_f1("", "tear") == 0.0
    assert token_f1("tear tear", "tear") == pytest.approx(2 * 0.5 * 1 / 1.5)


@pytest.mark.parametrize(
    ("pred", "true", "expected"),
    [
        ([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], 0.0625 / 0.4375),
        ([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6], 1.0),
        ([0, 0, 0.2, 0.2], [0.5, 0.5, 1, 1], 0.0),
        ([0, 0, 0.5, 1], [0, 0, 1, 1], 0.5),
        ([0, 0, 0, 0.5, 0.5, 0.5], [0.25, 0.25, 0.25, 0.75, 0.75, 0.75], 1 / 15),
        ([0, 0, 0, 1, 1, 0.5], [0, 0, 0, 1, 1, 1], 0.5),
        # 1% per axis: MONAI's union epsilon would give ~0.89 without medvl's rescaling.
        ([0, 0, 0, 0.01, 0.01, 0.01], [0, 0, 0, 0.01, 0.01, 0.01], 1.0),
    ],
)
def test_box_iou_hand_computed(pred, true, expected):
    assert box_iou(pred, true) == pytest.approx(expected, abs=1e-6)
    assert box_iou(np.array(pred), torch.tensor(true)) == pytest.approx(expected, abs=1e-6)


def test_box_iou_rejects_bad_boxes():
    with pytest.raises(ValueError):
        box_iou([0, 0, 1, 1], [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError):
        box_iou([0.5, 0, 0.1, 1], [0, 0, 1, 1])


def _square(shape, *slices):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[slices] = 1
    return mask


def test_dice_and_iou_on_known_overlap_2d_and_3d():
    a = _square((4, 4), slice(0, 2))  # rows 0-1: 8 pixels
    b = _square((4, 4), slice(1, 3))  # rows 1-2: 8 pixels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    p = _square((10, 10, 10), slice(2, 6), slice(2, 6), slice(2, 6))  # 64 voxels
    t = _square((10, 10, 10), slice(2, 6), slice(2, 6), slice(4, 8))  # 32 shared
    assert dice(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(0.5)
    assert mask_iou(p, t.astype(bool)) == pytest.approx(1 / 3)
    assert dice(p, p) == 1.0 and mask_iou(p, p) == 1.0


def test_hd95_single_points_and_anisotropic_spacing():
    p = _square((8, 8), 0, 0)
    t = _square((8, 8), 3, 4)
    assert hd95(p, t) == pytest.approx(5.0)
    assert hd95(p, t, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(6**2 + 4**2), rel=1e-6)
    # Two points each, every nearest distance 3 along axis 0.
    p2, t2 = np.zeros((8, 8)), np.zeros((8, 8))
    p2[0, 0] = p2[0, 5] = 1
    t2[3, 0] = t2[3, 5] = 1
    assert hd95(p2, t2) == pytest.approx(3.0)
    assert hd95(p2, t2, spacing=(2.0, 1.0)) == pytest.approx(6.0)  # axis 0 is 2 mm
    assert hd95(p2, t2, spacing=(1.0, 2.0)) == pytest.approx(3.0)  # axis 1 does not matter
    assert hd95(p2, t2, spacing=0.5) == pytest.approx(1.5)


def test_hd95_cubes_shifted_along_a_thick_axis():
    p = _square((10, 10, 10), slice(2, 6), slice(2, 6), slice(2, 6))
    t = _square((10, 10, 10), slice(2, 6), slice(2, 6), slice(4, 8))  # shifted 2 slices in z
    assert hd95(p, t) == pytest.approx(2.0)
    assert hd95(p, t, spacing=(0.5, 0.5, 3.0)) == pytest.approx(6.0)
    assert hd95(p, p, spacing=(0.5, 0.5, 3.0)) == 0.0


def test_empty_mask_rules():
    empty, full = np.zeros((5, 5, 5)), _square((5, 5, 5), slice(1, 3))
    assert dice(empty, empty) == 1.0
    assert mask_iou(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0
    for a, b in ((empty, full), (full, empty)):
        assert dice(a, b) == 0.0
        assert mask_iou(a, b) == 0.0
        assert hd95(a, b) == math.inf


def test_mask_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2D or 3D"):
        mask_iou(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 1.0, 1.0))


def test_severity_abs_error():
    assert severity_abs_error(1, 3) == 2.0
    assert severity_abs_error("Grade 3", "1") == 2.0
    assert severity_abs_error(2, 2) == 0.0
    assert severity_abs_error(None, 2) is None
    assert severity_abs_error("severe", 2) is None

"""The offline embedding matcher and threshold calibration on the phantom vocabulary's pairs."""

from __future__ import annotations

import pytest
from reasoning_pairs import MATCH, NO_MATCH, PAIRS

from medvl.eval.reasoning import score_reasoning
from medvl.eval.reasoning_matcher import (
    DEFAULT_THRESHOLD,
    EmbeddingMatcher,
    calibrate_threshold,
    minilm_dir,
    threshold_accuracy,
)


@pytest.fixture(scope="module")
def embedding():
    return EmbeddingMatcher()


def test_minilm_unpacks_once_into_the_cache(tmp_path):
    folder = minilm_dir(tmp_path)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert minilm_dir(tmp_path) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["all-MiniLM-L6-v2"]  # no temp folder left


def test_embedding_matcher_calibration_on_the_phantom_pairs(embedding):
    """The labelled pairs fit a threshold that labels nearly all of them right, the default is
    that threshold's neighbourhood, and a threshold fitted on half the pairs holds on the other
    half."""
    assert len(MATCH) >= 30 and len(NO_MATCH) >= 30
    calibration = calibrate_threshold(PAIRS, embedding)
    assert calibration.accuracy >= 0.93, (calibration.false_matches, calibration.missed)
    scores = [float(embedding.similarity([a], [b])[0, 0]) for a, b, _ in PAIRS]
    labels = [y for _, _, y in PAIRS]
    assert threshold_accuracy(scores, labels, DEFAULT_THRESHOLD) >= calibration.accuracy - 0.02
    half = PAIRS[::2]
    fitted = calibrate_threshold(half, embedding).threshold
    held = PAIRS[1::2]
    held_scores = [float(embedding.similarity([a], [b])[0, 0]) for a, b, _ in held]
    assert threshold_accuracy(held_scores, [y for *_, y in held], fitted) >= 0.85


def test_embedding_matcher_separates_a_good_and_a_wrong_reasoning(embedding):
    reference = [
        "Modality: this is a posteroanterior chest radiograph.",
        "Anatomy: both lungs, the heart, mediastinum, ribs and diaphragm are in view.",
        "Observation: a round soft-tissue opacity in the right upper zone, about 14 mm across.",
        "Conclusion: yes.",
    ]
    good = ("This is a PA chest X-ray.\nThe lungs, heart and mediastinum are visible.\n"
            "There is a rounded soft tissue density in the right upper zone.\n"
            "So the answer is yes.")  # fmt: skip
    wrong = (
        "This is a knee MRI.\nThe menisci are intact.\n"
        "There is a rounded soft tissue density in the left lower zone.\nTherefore no."
    )
    g = score_reasoning(good, reference, embedding, answer="yes", answer_type="closed")
    w = score_reasoning(wrong, reference, embedding, answer="yes", answer_type="closed")
    assert g.matched == 4 and g.f1 == 1.0 and g.order == 1.0 and g.consistent is True
    assert w.matched == 0 and w.f1 == 0.0 and w.consistent is False

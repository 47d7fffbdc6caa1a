"""Phantom samples: every answer type, answers true to the ground truth, balance, manifests."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from medvl.data import ANSWER_TYPES, read_manifest, validate_manifest
from medvl.data.balance import answer_balance
from medvl.data.phantom_samples import (
    GRADE_WORDS,
    LOCATIONS,
    NAMES,
    generate_phantom_dataset,
    phantom_samples,
)
from medvl.scans import load_scan
from medvl.scans.phantoms import iter_phantoms

N_CASES = 60  # 20 of each kind


@pytest.fixture(scope="module")
def cases():
    return list(iter_phantoms(N_CASES // 3, seed=0))


@pytest.fixture(scope="module")
def samples(cases):
    return list(phantom_samples(cases))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_phantom_dataset(tmp_path_factory.mktemp("ds"), 2, seed=7, progress=False)


def test_every_case_gets_every_answer_type(cases, samples):
    by_case = {}
    for s in samples:
        by_case.setdefault(s.meta["case"], set()).add(s.answer_type)
    assert len(by_case) == len(cases)
    assert all(types == set(ANSWER_TYPES) for types in by_case.values())
    assert len({s.id for s in samples}) == len(samples)


def test_answers_are_balanced_so_a_blind_guess_scores_chance(samples):
    balance = answer_balance(samples)
    letters, closed = balance["choice"], balance["closed"]
    assert max(abs(v - 0.25) for v in letters.values()) <= 0.05, letters
    assert max(abs(v - 0.5) for v in closed.values()) <= 0.05, closed
    # Also within each kind, so a model cannot use the anatomy as a shortcut.
    for kind in ("knee", "fundus", "chest"):
        part = answer_balance([s for s in samples if s.anatomy == kind])
        assert max(abs(v - 0.25) for v in part["choice"].values()) <= 0.05, (kind, part)
        assert part["closed"]["yes"] == 0.5
    # Half the findings are absent: "absent" must still not be a safe bet on grade questions.
    graded = Counter(s.options[s.answer] for s in samples if s.id.endswith("choice-grade"))
    assert max(graded.values()) / sum(graded.values()) <= 0.4, graded


def _named(case, question):
    """The finding a question names."""
    hits = [f for f in case.findings if NAMES[f.name] in question]
    assert len(hits) == 1, question
    return hits[0]


def test_answers_follow_the_ground_truth(cases, samples):
    truth = {c.case_id: c for c in cases}
    for s in samples:
        case = truth[s.meta["case"]]
        if s.answer_type == "choice" and s.id.endswith("choice-where"):
            f = next(f for f in case.present if f.name in LOCATIONS)
            assert s.options[s.answer] == f.location
            assert sorted(s.options.values()) == sorted(LOCATIONS[f.name])
        elif s.answer_type == "choice":
            assert s.options[s.answer] == GRADE_WORDS[_named(case, s.question).severity]
            assert sorted(s.options.values()) == sorted(GRADE_WORDS)
        elif s.answer_type == "closed":
            if s.question.startswith(("Is there", "Are there")) and "referable" not in s.question:
                assert s.answer == ("yes" if _named(case, s.question).present else "no")
        elif s.answer_type == "grounding":
            if s.mask is not None:
                f = next(f for f in case.findings if f.mask_label == s.meta["mask_label"])
                assert f is case.present[0] and tuple(s.box) == f.box
            else:
                assert not case.present and tuple(s.box) in case.structures.values()
            assert json.loads(s.answer) == pytest.approx(s.box, abs=1e-3)
        elif s.answer_type == "severity":
            want = case.grade if case.anatomy == "fundus" else _named(case, s.question).severity
            assert s.severity == want and s.answer == str(want)
        else:
            present = {NAMES[f.name] for f in case.present} or {"no abnormality"}
            assert set(s.answer.split(", ")) == present
        assert len(s.reasoning) == 4 and s.reasoning[-1].startswith("Conclusion")


def test_dataset_manifest_validates_with_files(dataset):
    report = validate_manifest(dataset, check_files=True)
    assert report.ok, report.summary()
    samples = read_manifest(dataset, check_files=True)
    assert {s.anatomy for s in samples} == {"knee", "fundus", "chest"}
    assert all(not s.image.startswith("/") for s in samples)  # relative to the manifest


def test_dataset_grounding_masks_load_back_to_the_box(dataset):
    root = dataset.parent
    grounded = [s for s in read_manifest(dataset) if s.answer_type == "grounding" and s.mask]
    assert grounded
    for s in grounded:
        mask = np.asarray(load_scan(s.mask_path(root))[0]) == s.meta["mask_label"]
        idx = np.argwhere(mask)
        n = np.array(mask.shape)
        box = (idx.min(0) / n).tolist() + ((idx.max(0) + 1) / n).tolist()
        assert box == s.box, s.id
        image = load_scan(s.image_paths(root)[0])
        assert tuple(image.shape[1:]) == mask.shape


def test_dataset_is_deterministic(dataset, tmp_path):
    again = generate_phantom_dataset(tmp_path, 2, seed=7, progress=False)
    assert again.read_bytes() == dataset.read_bytes()
    for s in read_manifest(again)[::7]:
        for a, b in zip(s.image_paths(again.parent), s.image_paths(dataset.parent), strict=True):
            assert a.read_bytes() == b.read_bytes()
    other = generate_phantom_dataset(tmp_path / "other", 1, seed=8, progress=False)
    assert other.read_bytes() != dataset.read_bytes()

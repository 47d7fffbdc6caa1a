from __future__ import annotations

import pytest

from medvl.data import Sample
from medvl.eval.ablations import swap_scans


def _sample(i: int, image, modality: str = "ct") -> Sample:
    return Sample.from_dict({"id": f"s{i}", "image": image, "modality": modality,
                             "question": "Is there a nodule?", "answer": "yes",
                             "answer_type": "closed"})  # fmt: skip


def test_every_scan_is_replaced_by_another_of_its_modality():
    samples = [_sample(i, f"ct{i % 5}.png") for i in range(10)]
    samples += [_sample(10 + i, [f"mr{i}a.png", f"mr{i}b.png"], "mr") for i in range(3)]
    swapped = swap_scans(samples, seed=3)
    assert [s.id for s in swapped] == [s.id for s in samples]
    mapping = {}
    for before, after in zip(samples, swapped, strict=True):
        assert after.image != before.image
        assert after.question == before.question and after.answer == before.answer
        key = str(before.image)
        assert mapping.setdefault(key, str(after.image)) == str(after.image)  # same scan, same swap
        first = after.image if isinstance(after.image, str) else after.image[0]
        assert first.startswith(before.modality[:2])
    assert sorted(mapping.values()) == sorted(mapping)  # a permutation of the scans


def test_a_modality_with_one_scan_cannot_be_swapped():
    with pytest.raises(ValueError, match="'mr' has only one scan"):
        swap_scans([_sample(0, "a.png"), _sample(1, "b.png"), _sample(2, "m.png", "mr")])

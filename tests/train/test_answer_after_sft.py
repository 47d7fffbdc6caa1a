"""After a short SFT, `MedVLM.answer` itself returns reasoning, an answer and a box in scan
coordinates, on a 2D and a 3D phantom, for every family.

The tiny models start random, so this overfits two grounding questions (one chest X-ray, one
knee MRI volume) with plain optimizer steps on `MedVLM.collate` + `forward` — the SFT path —
and then asks the same questions through `answer`, the user's path: generation, parsing of the
family's own box format, and mapping back to scan coordinates.
"""

from __future__ import annotations

import pytest
import torch

from medvl.data import Sample
from medvl.model import FAMILIES, MedVLM, Question
from medvl.scans import load_scan
from medvl.scans.phantoms import make_chest_case, make_knee_case, write_case

N_FRAMES = 4
MAX_STEPS = 400


def _box_iou(a: list[float], b: list[float]) -> float:
    d = len(a) // 2
    inter = union_a = union_b = 1.0
    for i in range(d):
        inter *= max(0.0, min(a[i + d], b[i + d]) - max(a[i], b[i]))
        union_a *= a[i + d] - a[i]
        union_b *= b[i + d] - b[i]
    return inter / (union_a + union_b - inter)


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    """Two grounding questions with short reasoning: a 2D chest X-ray and a 3D knee."""
    folder = tmp_path_factory.mktemp("phantoms")
    out = []
    for case, target in ((make_chest_case(3), "heart"), (make_knee_case(3), "patella")):
        paths = write_case(case, folder)
        path = paths["nifti"] if case.anatomy == "knee" else paths["png"]
        sample = Sample(
            id=f"{case.anatomy}-{target}", image=str(path), modality=case.modality,
            anatomy=case.anatomy, question=f"Locate the {target}.", answer="-",
            answer_type="grounding", box=list(case.structures[target]),
            reasoning=[f"{case.anatomy} scan", f"{target} found"],
        )  # fmt: skip
        out.append({"sample": sample, "scan": load_scan(path)})
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_returns_reasoning_answer_and_box_after_sft(family, questions, tiny_model_path):
    torch.manual_seed(0)
    vlm = MedVLM.from_pretrained(tiny_model_path(family))
    vlm.config.n_frames = N_FRAMES
    batch = vlm.collate(questions)
    optimizer = torch.optim.AdamW(vlm.trainable_parameters(), lr=3e-3)
    vlm.train()
    for _ in range(MAX_STEPS):
        loss = vlm(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    vlm.eval()
    assert loss.item() < 0.05, f"{family}: SFT did not fit two examples (loss {loss.item():.3f})"

    for item, dims in zip(questions, (4, 6), strict=True):
        sample = item["sample"]
        asked = Question(item["scan"], sample.question, answer_type="grounding",
                         modality=sample.modality, anatomy=sample.anatomy)  # fmt: skip
        ans = vlm.answer(asked, max_new_tokens=96)
        assert ans.well_formed, ans.raw
        assert ans.reasoning and "found" in ans.reasoning
        assert ans.answer
        assert ans.box is not None and len(ans.box) == dims, ans.raw
        assert _box_iou(ans.box, sample.box) > 0.8, (ans.box, sample.box)

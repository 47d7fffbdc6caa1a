"""Fixtures of the medvl.model tests: phantom cases, dataset items and tiny models per family."""

from __future__ import annotations

import pytest
import torch

from medvl.data.dataset import DatasetConfig, MedVLDataset
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.model import FAMILIES, MedVLM
from medvl.scans import load_scan
from medvl.scans.phantoms import make_chest_case, make_fundus_case, make_knee_case, write_case

N_FRAMES = 4  # frames of a volume: enough for the plumbing, cheap on a CPU


@pytest.fixture(scope="package")
def cases(tmp_path_factory):
    """Phantom cases written to disk and loaded back as MetaTensors (paths kept)."""
    folder = tmp_path_factory.mktemp("phantoms")
    out = {}
    for case in (make_knee_case(0), make_chest_case(0), make_fundus_case(0)):
        paths = write_case(case, folder)
        path = paths["nifti"] if case.anatomy == "knee" else paths["png"]
        out[case.anatomy] = {"case": case, "path": path, "scan": load_scan(path)}
    return out


@pytest.fixture(scope="package")
def items(tmp_path_factory):
    """Dataset items (frames view) of one knee and one fundus case: grounding and choice."""
    manifest = generate_phantom_dataset(
        tmp_path_factory.mktemp("ds"), 1, modalities=("knee", "fundus"), progress=False
    )
    ds = MedVLDataset(manifest, DatasetConfig(view="frames", n_frames=N_FRAMES))
    chosen = [i for i, s in enumerate(ds.samples) if s.answer_type == "grounding"]
    chosen.append(next(i for i, s in enumerate(ds.samples) if s.answer_type == "choice"))
    return [ds[i] for i in chosen]  # knee grounding, fundus grounding, knee choice


def _scramble(vlm: MedVLM, seed: int = 0) -> MedVLM:
    """Add noise to the LM so greedy replies vary (a fresh tiny model repeats one token)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vlm.model.named_parameters():
            if "language_model" in name or "lm_head" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return vlm


@pytest.fixture(scope="package", params=FAMILIES)
def plain(request, tiny_model_path):
    """A scrambled tiny model of each family, no heads, no LoRA."""
    return _scramble(MedVLM.from_pretrained(tiny_model_path(request.param)))


@pytest.fixture(scope="package", params=FAMILIES)
def grounded(request, tiny_model_path):
    """A tiny model of each family with box (2D + 3D) and mask heads and LoRA."""
    return MedVLM.from_pretrained(
        tiny_model_path(request.param), lora={"r": 4}, heads=["box", "mask"]
    )

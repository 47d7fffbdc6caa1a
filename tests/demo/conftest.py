"""A tiny model with a box head and a knee phantom, shared by the demo's tests."""

from __future__ import annotations

import pytest

from medvl.model import MedVLM
from medvl.scans.phantoms import make_knee_case, write_case


@pytest.fixture(scope="package")
def knee(tmp_path_factory: pytest.TempPathFactory):
    """(case, NIfTI path, DICOM series folder) of knee phantom 0."""
    case = make_knee_case(0)
    paths = write_case(case, tmp_path_factory.mktemp("knee"))
    return case, paths["nifti"], paths["dicom"]


@pytest.fixture(scope="package")
def boxed_model(tiny_model_path) -> MedVLM:
    return MedVLM.from_pretrained(tiny_model_path(), heads=["box"])

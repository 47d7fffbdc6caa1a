"""Fixtures of the grounding-head tests: one intra-op thread, tiny models loaded once."""

from __future__ import annotations

import pytest
import torch

from medvl.model import load_vlm


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy 2-core machine a second
    thread's synchronisation made each training step ~8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vlm(tiny_model_path):
    """``vlm(family) -> (model, processor)``, each tiny family loaded once for the module."""
    loaded: dict[str, tuple] = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_vlm(tiny_model_path(family, "tiny"))
        return loaded[family]

    return get

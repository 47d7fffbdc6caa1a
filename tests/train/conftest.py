"""Fixtures shared by the GRPO tests of tests/train."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medvl.model import load_vlm


@pytest.fixture(scope="module")
def loaded(tiny_model_path: Callable[..., Path]) -> Callable[[str], tuple]:
    """``loaded(family)`` -> (model in eval mode, processor) of the tiny build, once per module."""
    cache: dict[str, tuple] = {}

    def get(family: str) -> tuple:
        if family not in cache:
            model, processor = load_vlm(tiny_model_path(family), dtype=torch.float32)
            cache[family] = (model.eval(), processor)
        return cache[family]

    return get

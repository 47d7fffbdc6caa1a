"""Shared pytest fixtures: offline mode and tiny Qwen-VL models built once per session."""

from __future__ import annotations

import os

# Must precede any import of transformers / huggingface_hub: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from medvl.model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def medvl_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``MEDVL_CACHE`` for the session, so tests never write to ``~/.cache``."""
    cache = tmp_path_factory.mktemp("medvl-cache")
    previous = os.environ.get("MEDVL_CACHE")
    os.environ["MEDVL_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("MEDVL_CACHE", None)
    else:
        os.environ["MEDVL_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_model_path(medvl_cache: Path) -> Callable[..., Path]:
    """``tiny_model_path(family, size="tiny")`` -> checkpoint folder, built once per session."""

    def get(family: str = "qwen2_5_vl", size: str = "tiny") -> Path:
        return build_tiny_model(family, size, cache_dir=medvl_cache)

    return get


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state (mixed precision included): a test that sets
    another (TRL's Trainer, a bf16 run) starts and leaves it fresh for the others; it may call
    the yielded function to reset it in between."""
    from accelerate.state import AcceleratorState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)

    reset()
    yield reset
    reset()

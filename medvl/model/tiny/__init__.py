"""Tiny offline Qwen-VL builds (no download): the build, its BPE tokenizer, its chat templates.

    build_tiny_model(family, size, cache_dir, seed, force) -> Path   # medvl.model.tiny.build
    tiny_model_dir(family, size, cache_dir, seed) -> Path
"""

from medvl.model.tiny.build import MARKER, build_tiny_model, tiny_model_dir

__all__ = ["MARKER", "build_tiny_model", "tiny_model_dir"]

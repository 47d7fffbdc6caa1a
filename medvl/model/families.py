"""The model families and tiny sizes medvl knows, importable without loading transformers
(the CLI builds its parser from them, and ``medvl --help`` should answer at once)."""

FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""Model families medvl supports (their ``config.model_type``)."""

SIZES: tuple[str, ...] = ("tiny", "small")
"""Sizes :func:`medvl.model.tiny.build_tiny_model` can build."""

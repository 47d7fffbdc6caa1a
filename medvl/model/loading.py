"""Load a Qwen-VL checkpoint (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) with its processor.

One path for every checkpoint: a tiny model from :mod:`medvl.model.tiny` and Qwen2.5-VL-3B both go
through transformers' ``AutoProcessor`` and ``AutoModelForImageTextToText``. A name that is not a
local folder is looked up on the Hugging Face Hub / in its cache by transformers, which honours
``HF_HUB_OFFLINE=1`` (then only the cache is used).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.utils import cached_file

SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",  # Qwen3-VL-30B-A3B etc.: same processor and prompt layout
}
"""``config.model_type`` -> medvl family name."""

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class ModelLoadError(ValueError):
    """A checkpoint is missing or is not a supported Qwen-VL model."""


def _expected() -> str:
    return f"a Qwen-VL checkpoint with config.json model_type in {sorted(SUPPORTED_MODEL_TYPES)}"


def _read_config(name_or_path: str | os.PathLike) -> tuple[dict[str, Any], bool]:
    """Return the raw config dict and whether it came from a local folder."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"{path} has no config.json; expected {_expected()}")
        try:
            return json.loads(config_file.read_text()), True
        except ValueError as err:
            raise ModelLoadError(f"{config_file} is not valid JSON: {err}") from err
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a folder; expected {_expected()}")
    if isinstance(name_or_path, Path) or not _HUB_ID.fullmatch(name) or name.startswith("."):
        raise ModelLoadError(f"no such folder: {path}; expected {_expected()}")
    # A Hub id: transformers resolves it through the cache (and only the cache when offline).
    try:
        config_file = cached_file(name, "config.json")
    except OSError as err:
        raise ModelLoadError(
            f"{name!r} is neither a local folder nor a model found on the Hugging Face Hub or in "
            f"its cache (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); expected "
            f"{_expected()}. Cause: {err}"
        ) from err
    return json.loads(Path(config_file).read_text()), False


def detect_family(config_or_path: PretrainedConfig | Mapping[str, Any] | str | os.PathLike) -> str:
    """Return the medvl family (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``) of a checkpoint.

    Args:
        config_or_path: A transformers config, a config dict, a checkpoint folder or a Hub id.

    Returns:
        The family name; ``qwen3_vl_moe`` checkpoints count as ``qwen3_vl``.

    Raises:
        ModelLoadError: The checkpoint is missing or its ``model_type`` is not a Qwen-VL one.
    """
    if isinstance(config_or_path, PretrainedConfig):
        return _family(config_or_path.model_type, "config")
    if isinstance(config_or_path, Mapping):
        return _family(config_or_path.get("model_type"), "config")
    config, local = _read_config(config_or_path)
    return _family(config.get("model_type"), _source(config_or_path, local))


def _family(model_type: str | None, where: str) -> str:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"{where} has model_type {model_type!r}; expected {_expected()}")
    return SUPPORTED_MODEL_TYPES[model_type]


def _source(name_or_path: str | os.PathLike, local: bool) -> str:
    return str(Path(name_or_path).expanduser()) if local else str(name_or_path)


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device = "cpu"):
    """Turn a dtype argument into what ``from_pretrained(dtype=...)`` takes.

    ``None`` picks bfloat16 on a CUDA device that supports it and float32 elsewhere; ``"auto"``
    keeps the checkpoint's own dtype; names such as ``"float32"`` / ``"bf16"`` map to torch dtypes.
    """
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype is None:
        on_cuda = str(device).startswith(("cuda", "auto")) and torch.cuda.is_available()
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    choices = sorted(_DTYPES)
    raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype, 'auto' or one of {choices}")


def _device_map(device: str | torch.device) -> str | dict[str, str] | None:
    device = str(device)
    if device == "auto":
        return "auto" if torch.cuda.is_available() else None
    # None leaves the weights on the CPU without going through accelerate's dispatch.
    return None if device == "cpu" else {"": device}


TINY_PREFIX = "tiny:"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside its wrappers: DDP / FSDP / ``torch.compile`` (accelerate's
    ``extract_model_from_parallel``), then a peft adapter; a bare model is returned as is."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model, keep_torch_compile=False)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def resolve_model(name_or_path: str | os.PathLike) -> str | os.PathLike:
    """What to load for a model argument: the argument itself, or for ``tiny:<family>[-<size>]``
    (e.g. ``tiny:qwen2_5_vl-tiny``) the folder of that offline tiny build, made on first use."""
    if not isinstance(name_or_path, str) or not name_or_path.startswith(TINY_PREFIX):
        return name_or_path
    from medvl.model.tiny import build_tiny_model

    family, _, size = name_or_path.removeprefix(TINY_PREFIX).partition("-")
    return build_tiny_model(family, size or "tiny")


def load_vlm(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "auto",
    attn_implementation: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model and its processor, ready for generation.

    Args:
        name_or_path: A checkpoint folder (e.g. from :func:`medvl.model.build_tiny_model`), a
            Hugging Face Hub id such as ``"Qwen/Qwen2.5-VL-3B-Instruct"`` (read from the cache when
            ``HF_HUB_OFFLINE=1``), or ``tiny:<family>[-<size>]`` (see `resolve_model`).
        dtype: A torch dtype, a name (``"float32"``, ``"bfloat16"``, ``"float16"``), ``"auto"``
            for the checkpoint's dtype, or ``None``: bfloat16 on CUDA, float32 on the CPU.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (all visible GPUs via
            accelerate, else the CPU).
        attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``, or ``None`` for the
            transformers default.
        **model_kwargs: Passed on to ``AutoModelForImageTextToText.from_pretrained`` (e.g.
            ``revision``, ``quantization_config``).

    Returns:
        ``(model, processor)``: the model in eval mode; the processor's tokenizer pads on the left,
        as batched generation needs.

    Raises:
        ModelLoadError: The folder is missing, has no ``config.json``, or is not a Qwen-VL model.
    """
    name_or_path = resolve_model(name_or_path)
    config, local = _read_config(name_or_path)
    source = _source(name_or_path, local)
    _family(config.get("model_type"), source)  # fail fast, before reading any weights
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            dtype=resolve_dtype(dtype, device),
            device_map=_device_map(device),
            attn_implementation=attn_implementation,
            **model_kwargs,
        )
    except OSError as err:
        raise ModelLoadError(f"could not load {source}: {err}") from err
    model.eval()
    processor.tokenizer.padding_side = "left"
    return model, processor

"""Qwen-VL models for medvl: loading, tiny offline models, and one-question generation.

Public API::

    build_tiny_model(family, size, cache_dir, seed, force) -> Path
    load_vlm(name_or_path, dtype, device, attn_implementation) -> (model, processor)
    resolve_model("tiny:qwen2_5_vl-tiny") -> the tiny build's folder (other names unchanged)
    detect_family(config_or_path) -> "qwen2_vl" | "qwen2_5_vl" | "qwen3_vl"
    ask(model, processor, question, image=..., video=...) -> AskResult
    MedVLM.from_pretrained(path, lora, heads, ...) -> MedVLM   (answer, collate, forward, save)
    parse_answer(raw, family, context) -> Answer
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvl._lazy import lazy_getattr
from medvl.model.families import FAMILIES, SIZES

# Names resolve on first use: importing transformers takes seconds, and `medvl --help` or
# `medvl info` should not pay for it.
_LAZY = {
    "CHAT_TEMPLATES": "medvl.model.tiny.chat_templates",
    "AskResult": "medvl.model.generate",
    "ask": "medvl.model.generate",
    "build_messages": "medvl.model.inputs",
    "prepare_inputs": "medvl.model.inputs",
    "show_scan": "medvl.model.inputs",
    "Question": "medvl.model.inputs",
    "SUPPORTED_MODEL_TYPES": "medvl.model.loading",
    "ModelLoadError": "medvl.model.loading",
    "detect_family": "medvl.model.loading",
    "load_vlm": "medvl.model.loading",
    "resolve_dtype": "medvl.model.loading",
    "resolve_model": "medvl.model.loading",
    "build_tiny_model": "medvl.model.tiny",
    "Answer": "medvl.model.replies",
    "AnswerContext": "medvl.model.replies",
    "parse_answer": "medvl.model.replies",
    "MedVLM": "medvl.model.medvlm",
    "MedVLMConfig": "medvl.model.medvlm_config",
    "MedVLMOutput": "medvl.model.medvlm",
    "tiny_model_dir": "medvl.model.tiny",
}

if TYPE_CHECKING:
    from medvl.model.generate import AskResult, ask
    from medvl.model.inputs import Question, build_messages, prepare_inputs, show_scan
    from medvl.model.loading import (
        SUPPORTED_MODEL_TYPES,
        ModelLoadError,
        detect_family,
        load_vlm,
        resolve_dtype,
        resolve_model,
    )
    from medvl.model.medvlm import MedVLM, MedVLMOutput
    from medvl.model.medvlm_config import MedVLMConfig
    from medvl.model.replies import Answer, AnswerContext, parse_answer
    from medvl.model.tiny import build_tiny_model, tiny_model_dir
    from medvl.model.tiny.chat_templates import CHAT_TEMPLATES


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "CHAT_TEMPLATES",
    "Answer",
    "AnswerContext",
    "MedVLM",
    "MedVLMConfig",
    "MedVLMOutput",
    "Question",
    "FAMILIES",
    "SIZES",
    "SUPPORTED_MODEL_TYPES",
    "AskResult",
    "ModelLoadError",
    "ask",
    "build_messages",
    "build_tiny_model",
    "detect_family",
    "load_vlm",
    "parse_answer",
    "prepare_inputs",
    "resolve_dtype",
    "resolve_model",
    "show_scan",
    "tiny_model_dir",
]

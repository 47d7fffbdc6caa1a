"""Tiny random-init Qwen-VL models, built offline, for tests, benchmarks and the quickstart.

Each build is a complete checkpoint folder — model, processor (the family's real image and video
processors, an offline-trained Qwen tokenizer, the family's chat template) and generation config —
that :func:`medvl.model.load_vlm` loads exactly like Qwen2.5-VL-3B::

    from medvl.model import build_tiny_model, load_vlm

    path = build_tiny_model("qwen2_5_vl", size="tiny")
    model, processor = load_vlm(path)

Sizes:

* ``tiny``: weights under 1 MB (LM hidden 64, 2 layers; vision width 32, depth 2), for unit tests.
* ``small``: a few million parameters (LM hidden 256, 4 layers; vision width 128, depth 4), for
  benchmarks and the quickstart.

Pixel budgets. Both sizes cap the vision tokens a scan costs, so CPU runs stay fast. With
``f = patch_size * merge_size`` (28 for Qwen2/2.5-VL, 32 for Qwen3-VL) one merged vision token
covers ``f * f`` pixels of an image. An image is resized to between ``image_tokens[0]`` and
``image_tokens[1]`` tokens (tiny: 4..64, small: 4..256), a video frame to between
``frame_tokens[0]`` and ``frame_tokens[1]`` (tiny: 4..16, small: 4..64); two frames share one
token (temporal patch 2). A 128x128 image costs 25 tokens on Qwen2/2.5-VL and 16 on Qwen3-VL; a
16-frame 64x64 volume costs 32 on every family.

Builds live in ``$MEDVL_CACHE/tiny/<family>-<size>`` (``MEDVL_CACHE`` defaults to
``~/.cache/medvl``; a non-zero seed adds ``-seed<k>``). A build is written to a temporary folder
and renamed, so a crash never leaves a half folder, and a complete build is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForImageTextToText,
    GenerationConfig,
    PreTrainedConfig,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.utils import logging as hf_logging

from medvl._io import swap_in
from medvl.model.families import FAMILIES, SIZES
from medvl.model.tiny.chat_templates import CHAT_TEMPLATES
from medvl.model.tiny.tokenizer import train_tokenizer

MARKER = "medvl_tiny.json"
"""File written last into a build; a folder without it (or from another builder version) is
rebuilt."""

_BUILDER_VERSION = 3  # bump when a change to this file must invalidate cached builds

# Rotary base of the language model, every family and size. The real bases (1e6; 5e6 for
# Qwen3-VL) on these 16-32-wide heads turn M-RoPE's height/width sections by ~1e-4..3e-2 rad per
# grid step: image tokens lose their place and "which quadrant" stays at chance (0.25 at 1e6,
# 1.00 at 10 on tiny Qwen2.5-VL; docs/learning.md, bench/sees.py). Real checkpoints are untouched.
_ROPE_THETA = 10.0

# Videos keep the full per-frame budget up to about this many frames; longer ones shrink per
# frame so that the clip's total stays bounded.
_FULL_BUDGET_FRAMES = 256


@dataclass(frozen=True)
class _Size:
    bpe_vocab: int  # BPE merges target; the added Qwen tokens come on top
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    tie_embeddings: bool
    image_tokens: tuple[int, int]  # (min, max) merged vision tokens per image
    frame_tokens: tuple[int, int]  # (min, max) per video frame (a pair of frames shares them)


_SIZES = {
    "tiny": _Size(
        bpe_vocab=448,
        text_hidden=64,
        text_layers=2,
        text_heads=4,
        text_kv_heads=2,
        text_intermediate=96,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
        tie_embeddings=True,  # as Qwen2.5-VL-3B; halves the largest matrix
        image_tokens=(4, 64),
        frame_tokens=(4, 16),
    ),
    "small": _Size(
        bpe_vocab=1024,
        text_hidden=256,
        text_layers=4,
        text_heads=8,
        text_kv_heads=4,
        text_intermediate=768,
        vision_hidden=128,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate=512,
        tie_embeddings=False,
        image_tokens=(4, 256),
        frame_tokens=(4, 64),
    ),
}


def tiny_model_dir(
    family: str = "qwen2_5_vl",
    size: str = "tiny",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Folder where :func:`build_tiny_model` puts (or finds) a build.

    Args:
        family: One of :data:`FAMILIES`.
        size: One of :data:`SIZES`.
        cache_dir: Cache root; defaults to ``$MEDVL_CACHE`` or else ``~/.cache/medvl``.
        seed: Seed of the random weights; non-zero seeds get their own folder.

    Returns:
        ``<cache root>/tiny/<family>-<size>[-seed<seed>]``.
    """
    _check(family, size)
    root = cache_dir or os.environ.get("MEDVL_CACHE") or Path.home() / ".cache" / "medvl"
    name = f"{family}-{size}" + (f"-seed{seed}" if seed else "")
    return Path(root).expanduser() / "tiny" / name


def build_tiny_model(
    family: str = "qwen2_5_vl",
    size: str = "tiny",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Build (or reuse) a random-init model of ``family`` and save it as a checkpoint folder.

    Works offline: nothing is downloaded. The same ``seed`` gives identical weights and tokenizer.

    Args:
        family: ``"qwen2_vl"``, ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        size: ``"tiny"`` (weights under 1 MB) or ``"small"`` (a few million parameters).
        cache_dir: Cache root (see :func:`tiny_model_dir`).
        seed: Seed for the random weights.
        force: Rebuild even if a complete build exists.

    Returns:
        The checkpoint folder, loadable with :func:`medvl.model.load_vlm` or transformers'
        ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    target = tiny_model_dir(family, size, cache_dir, seed)
    if not force and _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_build(tmp, family, size, seed)
        try:
            swap_in(tmp, target)
        except OSError:
            # Another process finished the same build between our check and here: keep theirs.
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check(family: str, size: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")


def _is_complete(folder: Path) -> bool:
    try:
        info = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("builder_version") == _BUILDER_VERSION


@contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    # Saving a 1 MB model should not draw a progress bar in the quickstart's output.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _write_build(folder: Path, family: str, size: str, seed: int) -> None:
    spec = _SIZES[size]
    tokenizer = train_tokenizer(family, spec.bpe_vocab)
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    bos, eos, pad = (
        tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    )
    # Round the embedding up like Qwen does (151936 rows for 151665 tokens).
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = _model_config(family, spec, vocab_size, ids, bos=bos, eos=eos, pad=pad)

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=[eos, bos], pad_token_id=pad, do_sample=False
    )
    with _quiet_progress_bars():
        model.save_pretrained(folder)

    tokenizer.chat_template = CHAT_TEMPLATES[family]
    processor = _processor(family, spec, tokenizer)
    processor.save_pretrained(folder)

    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "builder_version": _BUILDER_VERSION,
        "family": family,
        "size": size,
        "seed": seed,
        "num_parameters": n_params,
        "transformers_version": transformers.__version__,
    }
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def _mrope_section(family: str, head_dim: int) -> list[int]:
    """Split the rotary half-dimension over (time, height, width); it must sum to head_dim/2."""
    half = head_dim // 2
    if family == "qwen3_vl":
        # Interleaved layout, in the real 24:20:20 proportion of 64.
        hw = half * 5 // 16
        return [half - 2 * hw, hw, hw]
    # Qwen2/2.5-VL: contiguous (t, h, w) chunks over falling frequencies, so width gets the
    # slowest. The real 16:24:24 split kept small Qwen2.5-VL at 0.25 on "which quadrant"; [2, 7, 7]
    # (a picture has one time index) gives 1.00. Tiny keeps [2, 3, 3] (docs/learning.md).
    t = half // 4 if half < 16 else half // 8
    h = (half - t) // 2
    return [t, h, half - t - h]


def _model_config(
    family: str, s: _Size, vocab_size: int, ids: dict[str, int], *, bos: int, eos: int, pad: int
) -> PreTrainedConfig:
    head_dim = s.text_hidden // s.text_heads
    text = {
        "vocab_size": vocab_size,
        "hidden_size": s.text_hidden,
        "intermediate_size": s.text_intermediate,
        "num_hidden_layers": s.text_layers,
        "num_attention_heads": s.text_heads,
        "num_key_value_heads": s.text_kv_heads,
        "max_position_embeddings": 32768,
        "pad_token_id": pad,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": _ROPE_THETA,
            "mrope_section": _mrope_section(family, head_dim),
        },
    }
    vision = {
        "depth": s.vision_depth,
        "num_heads": s.vision_heads,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    # Vision blocks whose index counts as "late" in the real 32-deep encoders.
    odd_blocks = [i for i in range(s.vision_depth) if i % 2 == 1]
    common = {**ids, "tie_word_embeddings": s.tie_embeddings}

    if family == "qwen2_vl":
        vision |= {
            "embed_dim": s.vision_hidden,
            "hidden_size": s.text_hidden,
            "patch_size": 14,
            "mlp_ratio": s.vision_intermediate // s.vision_hidden,
        }
        return Qwen2VLConfig(
            text_config=text | {"bos_token_id": bos, "eos_token_id": eos},
            vision_config=vision,
            **common,
        )
    if family == "qwen2_5_vl":
        vision |= {
            "hidden_size": s.vision_hidden,
            "intermediate_size": s.vision_intermediate,
            "out_hidden_size": s.text_hidden,
            "patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": odd_blocks,
            "tokens_per_second": 2,
        }
        return Qwen2_5_VLConfig(
            text_config=text | {"bos_token_id": bos, "eos_token_id": eos},
            vision_config=vision,
            **common,
        )
    # Qwen3-VL: explicit head_dim, interleaved M-RoPE, patch 16, a learned position grid that is
    # interpolated to each image, and "deepstack" features taken from the odd vision blocks.
    text["head_dim"] = head_dim
    text["rope_parameters"]["mrope_interleaved"] = True
    vision |= {
        "hidden_size": s.vision_hidden,
        "intermediate_size": s.vision_intermediate,
        "out_hidden_size": s.text_hidden,
        "patch_size": 16,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": odd_blocks,
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision, **common)


def _processor(family: str, s: _Size, tokenizer: Qwen2Tokenizer) -> ProcessorMixin:
    patch = 16 if family == "qwen3_vl" else 14
    unit = (patch * 2) ** 2  # pixels per merged token
    image_size = {
        "shortest_edge": s.image_tokens[0] * unit,
        "longest_edge": s.image_tokens[1] * unit,
    }
    image_kwargs = {
        "size": image_size,
        "patch_size": patch,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    if family == "qwen3_vl":
        # Qwen3-VL normalises to [-1, 1] and sizes a video by its pixels over all frames, so
        # the per-frame ceiling comes from `max_video_tokens` with `cap_pixels_per_frame`.
        norm = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
        image_processor = Qwen2VLImageProcessor(**image_kwargs, **norm)
        video_processor = Qwen3VLVideoProcessor(
            **norm,
            size={
                "shortest_edge": s.frame_tokens[0] * unit,
                "longest_edge": s.frame_tokens[1] * unit * _FULL_BUDGET_FRAMES,
            },
            patch_size=patch,
            temporal_patch_size=2,
            merge_size=2,
            cap_pixels_per_frame=True,
            max_video_tokens=s.frame_tokens[1],
        )
        return Qwen3VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=CHAT_TEMPLATES[family]
        )

    image_processor = Qwen2VLImageProcessor(**image_kwargs)
    # Qwen2/2.5-VL size each frame on its own; `max_video_tokens` bounds the whole clip.
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": s.frame_tokens[0] * unit, "longest_edge": s.frame_tokens[1] * unit},
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        cap_pixels_per_frame=True,
        max_video_tokens=s.frame_tokens[1] * _FULL_BUDGET_FRAMES,
    )
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor, tokenizer, video_processor, chat_template=CHAT_TEMPLATES[family])

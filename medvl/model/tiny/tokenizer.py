"""An offline Qwen-style tokenizer for the tiny models.

A real Qwen tokenizer has 151k entries, which alone would be hundreds of MB of embeddings. Here a
byte-level BPE is trained in a fraction of a second on a small generated corpus (radiology words,
digits, punctuation, JSON boxes, ``<think>``/``<answer>`` tags), with the pre-tokenizer of
``Qwen2Tokenizer``, and wrapped in that class. Every Qwen special token follows the BPE vocabulary
in the official order, so code that looks tokens up by string works unchanged on real checkpoints.
Any text round-trips, since byte-level BPE can spell every byte.
"""

from __future__ import annotations

import json
import random

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers
from tokenizers.trainers import BpeTrainer
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

# (token, special) in the order of the official Qwen2/Qwen2.5 vocabulary. "special" means
# skipped by `decode(skip_special_tokens=True)`; tool and fim tokens are plain added tokens there.
QWEN2_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen3 appends these; `<think>` stays visible in decoded text, as in the real tokenizer.
QWEN3_EXTRA_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)


def added_tokens(family: str) -> tuple[tuple[str, bool], ...]:
    """The ``(token, special)`` pairs that follow the BPE vocabulary for ``family``."""
    return QWEN2_ADDED_TOKENS + (QWEN3_EXTRA_TOKENS if family == "qwen3_vl" else ())


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


_ANATOMY = _words("""
    knee, meniscus, medial meniscus, lateral meniscus, anterior cruciate ligament,
    posterior cruciate ligament, cartilage, femur, tibia, patella, bone marrow, joint, brain,
    ventricle, white matter, hippocampus, cerebellum, lung, left lung, right lung, heart, liver,
    kidney, spleen, spine, vertebra, chest, abdomen, pelvis, retina, optic disc, macula, fovea,
    vessel, aorta
""")
_FINDINGS = _words("""
    tear, edema, effusion, lesion, nodule, fracture, hemorrhage, infarct, opacity, consolidation,
    pneumothorax, pleural effusion, cardiomegaly, mass, cyst, tumor, atrophy, degeneration,
    osteophyte, bone bruise, drusen, exudate, microaneurysm, neovascularization, glaucoma,
    no abnormality
""")
_MODALITIES = _words("""
    MRI, CT, X-ray, T1-weighted, T2-weighted, FLAIR, proton density, sagittal, coronal, axial,
    fundus photograph, OCT, ultrasound, PET
""")
_SEVERITY = _words("none, mild, moderate, severe, grade 0, grade 1, grade 2, grade 3")
_WHERE = _words("""
    left, right, anterior, posterior, medial, lateral, superior, inferior, upper, lower, central,
    peripheral
""")
_QUESTIONS = (
    "What abnormality is seen in the {a}?",
    "Is there a {f} in the {a}?",
    "Which organ is shown in this {m} image?",
    "Where is the {f} located?",
    "How severe is the {f} of the {a}?",
    "Locate the {f} and give its bounding box.",
    "Is this image normal or abnormal?",
    "Describe the findings in the {a} on this {m} scan.",
)
_ANSWERS = (
    "Yes.",
    "No.",
    "There is a {s} {f} in the {w} {a}.",
    "The {m} shows {f} of the {a}.",
    "The {a} appears normal.",
    "{s}",
)


def build_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Generate ``n`` short medical texts for BPE training (deterministic for ``seed``)."""
    rng = random.Random(seed)
    lines = [
        "You are a helpful assistant.",
        "The quick brown fox jumps over the lazy dog. 0123456789",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    ]
    for _ in range(n):
        fill = {
            "a": rng.choice(_ANATOMY),
            "f": rng.choice(_FINDINGS),
            "m": rng.choice(_MODALITIES),
            "s": rng.choice(_SEVERITY),
            "w": rng.choice(_WHERE),
        }
        question = rng.choice(_QUESTIONS).format(**fill)
        answer = rng.choice(_ANSWERS).format(**fill)
        box = sorted(rng.randrange(0, 1000) for _ in range(4))
        box_json = json.dumps({"bbox_2d": [box[0], box[1], box[2], box[3]], "label": fill["f"]})
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(f"{question}\n{answer}")
        elif kind == 1:
            thought = f"The {fill['a']} shows {fill['f']}."
            lines.append(f"<think>\n{thought}\n</think>\n<answer>{answer}</answer>")
        elif kind == 2:
            lines.append(f"```json\n[{box_json}]\n```")
        elif kind == 3:
            picks = rng.sample(_FINDINGS, 4)
            options = "\n".join(f"{k}. {v}" for k, v in zip("ABCD", picks, strict=True))
            answer = f"<answer>{rng.choice('ABCD')}</answer>"
            lines.append(f"{question}\n{options}\nAnswer with the letter.\n{answer}")
        elif kind == 4:
            unit_box = ", ".join(f"{v / 1000:.3f}" for v in box)
            lines.append(f"[{unit_box}] slice {rng.randrange(64)} of {rng.choice((32, 64))}")
        else:
            lines.append(f"({box[0]},{box[1]}),({box[2]},{box[3]}) {fill['f']} {fill['s']}")
    return lines


def train_tokenizer(family: str, vocab_size: int) -> Qwen2Tokenizer:
    """Train a byte-level BPE on :func:`build_corpus` and wrap it as a ``Qwen2Tokenizer``.

    Args:
        family: One of ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl`` (decides the added tokens).
        vocab_size: Size of the BPE vocabulary before the added tokens; at least 256 (bytes).
            Training stops early if the corpus has no more pairs to merge.

    Returns:
        A tokenizer whose ids ``0..n-1`` are BPE tokens, followed by :func:`added_tokens`, with
        ``eos_token="<|im_end|>"``, ``pad_token="<|endoftext|>"`` and no BOS, as in Qwen.
    """
    bpe = Tokenizer(models.BPE())
    # Same normalizer and pre-tokenizer as Qwen2Tokenizer, so the merges fit what it splits.
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(build_corpus(), trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m) for m in state["merges"]]

    tokens = added_tokens(family)
    # Placing the added tokens in the vocabulary first pins their ids to the official order.
    for token, _ in tokens:
        vocab[token] = len(vocab)
    special = [t for t, is_special in tokens if is_special]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in special if t != "<|endoftext|>"],
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, is_special in tokens
            if not is_special
        ]
    )
    return tokenizer

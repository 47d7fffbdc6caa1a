"""The shared-prefix log-probs equal a plain full-sequence forward ("GRPO without waste")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medvl.train.logprobs as logprobs
from medvl.model import load_vlm
from medvl.model.inputs import build_messages, prepare_inputs
from medvl.train.logprobs import completion_logprobs, shared_prefix_logprobs

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
TOL = 1e-4
COMPLETIONS = (  # G = 4 completions of different lengths, right-padded
    "<think>The meniscus shows a linear signal reaching the surface.</think><answer>yes</answer>",
    "<think>Normal.</think><answer>no</answer>",
    "<answer>grade 2</answer>",
    "yes",
)


def _picture(rng: np.random.Generator, size: int = 64) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _prompt(processor, kind: str) -> dict:
    rng = np.random.default_rng(0)
    if kind == "image":
        messages = build_messages("Is there a tear?", image=_picture(rng))
    elif kind == "video":
        messages = build_messages("Is there a tear?", video=[_picture(rng) for _ in range(4)])
    else:
        messages = build_messages("Is there a tear?")
    return dict(prepare_inputs(processor, messages))


def _completions(processor) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer = processor.tokenizer
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in COMPLETIONS]
    length = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    assert len({len(row) for row in rows}) == len(rows), "lengths must differ"
    return ids, mask


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("family", FAMILIES)
def test_shared_equals_naive(loaded, family: str, kind: str, monkeypatch) -> None:
    model, processor = loaded(family)
    inputs = _prompt(processor, kind)
    ids, mask = _completions(processor)
    with torch.no_grad():
        naive = completion_logprobs(model, inputs, ids, mask)
        shared = shared_prefix_logprobs(model, inputs, ids, mask)
    assert naive.shape == shared.shape == ids.shape
    assert torch.isfinite(shared).all()
    assert (shared[mask == 0] == 0).all() and (shared[mask == 1] < 0).all()
    assert _max_diff(naive, shared) < TOL

    # The check has teeth: positions one step off are caught.
    positions = logprobs._positions
    monkeypatch.setattr(logprobs, "_positions", lambda *a: positions(*a) + 1)
    with torch.no_grad():
        wrong = shared_prefix_logprobs(model, inputs, ids, mask)
    assert _max_diff(naive, wrong) > TOL


@pytest.mark.parametrize("layout", ["eager", "repeated"])
def test_other_attention_layouts_equal_naive(loaded, layout: str, monkeypatch) -> None:
    """SDPA runs the G completions as one packed row; eager attention gets the same mask in
    additive form; an implementation that takes no 4D mask (flash attention, which needs a GPU)
    gets the prompt's cache repeated to G rows. Each equals the naive forward."""
    model, processor = loaded("qwen2_5_vl")
    inputs = _prompt(processor, "image")
    ids, mask = _completions(processor)
    if layout == "eager":
        model.set_attn_implementation("eager")
    else:
        monkeypatch.setattr(logprobs, "ready_mask", lambda *args: None)
    try:
        with torch.no_grad():
            naive = completion_logprobs(model, inputs, ids, mask)
            shared = shared_prefix_logprobs(model, inputs, ids, mask)
    finally:
        model.set_attn_implementation("sdpa")
    assert _max_diff(naive, shared) < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_prompt_and_stale_rope_deltas(loaded, family: str) -> None:
    model, processor = loaded(family)
    ids, mask = _completions(processor)
    with torch.no_grad():
        shared_prefix_logprobs(model, _prompt(processor, "video"), ids, mask)  # sets rope_deltas
        text = _prompt(processor, "text")
        naive = completion_logprobs(model, text, ids, mask)
        shared = shared_prefix_logprobs(model, text, ids, mask)
    assert _max_diff(naive, shared) < TOL


def test_single_token_completions(loaded) -> None:
    model, processor = loaded("qwen2_5_vl")
    inputs = _prompt(processor, "image")
    ids, _ = _completions(processor)
    with torch.no_grad():
        naive = completion_logprobs(model, inputs, ids[:, :1])
        shared = shared_prefix_logprobs(model, inputs, ids[:, :1])
    assert shared.shape == (4, 1)
    assert _max_diff(naive, shared) < TOL


def _grads(model, fn, inputs, ids, mask, names) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logp = fn(model, inputs, ids, mask)
    (logp.sum() / mask.sum()).backward()
    params = dict(model.named_parameters())
    grads = {name: params[name].grad.detach().clone() for name in names}
    model.zero_grad(set_to_none=True)
    return grads


def _watched(model) -> list[str]:
    """A few parameters: the vision encoder (prompt only), attention in the LM, the norm."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    picks = [
        next(n for n in names if "visual" in n and "patch_embed" in n),
        next(n for n in names if "language_model" in n and "q_proj" in n),
        next(n for n in names if "language_model" in n and "v_proj" in n),
        next(n for n in names if "language_model" in n and n.endswith("norm.weight")),
    ]
    return picks


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match(loaded, family: str) -> None:
    model, processor = loaded(family)
    inputs = _prompt(processor, "video")
    ids, mask = _completions(processor)
    names = _watched(model)
    naive = _grads(model, completion_logprobs, inputs, ids, mask, names)
    shared = _grads(model, shared_prefix_logprobs, inputs, ids, mask, names)
    for name in names:
        assert naive[name].abs().max() > 0, name  # the loss reaches the prompt's scan
        assert _max_diff(naive[name], shared[name]) < TOL, name


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_lora(tiny_model_path: Callable[..., Path], family: str) -> None:
    peft = pytest.importorskip("peft")
    model, processor = load_vlm(tiny_model_path(family), dtype=torch.float32)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = peft.get_peft_model(model, config).eval()
    inputs = _prompt(processor, "image")
    ids, mask = _completions(processor)
    with torch.no_grad():
        naive = completion_logprobs(model, inputs, ids, mask)
        shared = shared_prefix_logprobs(model, inputs, ids, mask)
    assert _max_diff(naive, shared) < TOL

    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n][:3]
    naive_g = _grads(model, completion_logprobs, inputs, ids, mask, names)
    shared_g = _grads(model, shared_prefix_logprobs, inputs, ids, mask, names)
    for name in names:
        assert naive_g[name].abs().max() > 0, name
        assert _max_diff(naive_g[name], shared_g[name]) < TOL, name


def test_bad_inputs(loaded) -> None:
    model, processor = loaded("qwen2_5_vl")
    inputs = _prompt(processor, "image")
    ids, mask = _completions(processor)
    no_types = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        shared_prefix_logprobs(model, no_types, ids, mask)
    with pytest.raises(ValueError, match="batch 1"):
        completion_logprobs(model, {**inputs, "input_ids": inputs["input_ids"].repeat(2, 1)}, ids)
    with pytest.raises(ValueError, match="shape"):
        shared_prefix_logprobs(model, inputs, ids, mask[:, :-1])


def test_temperature_divides_the_logits(loaded) -> None:
    """Log-probs at the sampling temperature: log_softmax(logits / T), on both paths."""
    model, processor = loaded("qwen2_5_vl")
    inputs = _prompt(processor, "image")
    ids, mask = _completions(processor)
    with torch.no_grad():
        shared = shared_prefix_logprobs(model, inputs, ids, mask, temperature=0.7)
        naive = completion_logprobs(model, inputs, ids, mask, temperature=0.7)
        plain = completion_logprobs(model, inputs, ids, mask)
        # By hand for the first completion's first token: the prompt's last logits.
        logits = model(**inputs).logits[0, -1]
    assert _max_diff(shared, naive) < TOL
    assert _max_diff(shared, plain) > 1e-2
    first = torch.log_softmax(logits.float() / 0.7, dim=-1)[ids[0, 0]]
    assert float(shared[0, 0]) == pytest.approx(float(first), abs=TOL)


def test_entropy_of_each_token_distribution(loaded) -> None:
    model, processor = loaded("qwen2_5_vl")
    inputs = _prompt(processor, "image")
    ids, mask = _completions(processor)
    shared, naive = [], []
    with torch.no_grad():
        shared_prefix_logprobs(model, inputs, ids, mask, temperature=0.7, entropy=shared)
        completion_logprobs(model, inputs, ids, mask, temperature=0.7, entropy=naive)
        logits = model(**inputs).logits[0, -1].float() / 0.7
    assert shared[0].shape == ids.shape and _max_diff(shared[0], naive[0]) < TOL
    assert not shared[0][mask == 0].any()
    p = torch.softmax(logits, -1)
    by_hand = float(-(p * p.log()).sum())
    assert float(shared[0][0, 0]) == pytest.approx(by_hand, abs=1e-4)

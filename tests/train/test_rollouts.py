"""GRPO rollouts from one prefill (medvl.train.rollouts): greedy decoding gives generate's
tokens, seeded sampling draws generate's samples, the first token follows the warped softmax,
stop tokens end rows, and the prompt is prefilled once per group, not G times."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.model.inputs import build_messages, prepare_inputs
from medvl.train.logprobs import _vlm
from medvl.train.rollouts import sample_group, sampling_warpers

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def _inputs(processor, kind: str) -> dict:
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
                for _ in range(4)]  # fmt: skip
    if kind == "video":
        messages = build_messages("Is there a tear?", video=pictures)
    else:
        messages = build_messages("Is there a tear?", image=pictures[0])
    return dict(prepare_inputs(processor, messages))


def _generate(model, inputs, stop, pad, **kw) -> torch.Tensor:
    out = model.generate(**inputs, pad_token_id=pad, eos_token_id=stop, **kw)
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_and_seeded_sampling_match_generate(loaded, family, kind) -> None:
    model, processor = loaded(family)
    inputs, pad = _inputs(processor, kind), processor.tokenizer.pad_token_id
    with torch.no_grad():
        free = _generate(model, inputs, [pad], pad, do_sample=False, max_new_tokens=12)
    # A stop token the greedy reply reaches at its 5th token, so rows end early.
    stop = [int(free[0, 4])]
    with torch.no_grad():
        want = _generate(model, inputs, stop, pad, do_sample=False, max_new_tokens=12)
        got = sample_group(model, inputs, 3, 12, stop, pad, do_sample=False)
    assert got.shape[1] == want.shape[1] <= 5
    assert all(torch.equal(row, want[0]) for row in got)
    settings = {"temperature": 0.9, "top_k": 40, "top_p": 0.95}
    with torch.no_grad():
        torch.manual_seed(3)
        want = _generate(model, inputs, stop, pad, do_sample=True, max_new_tokens=10,
                         num_return_sequences=6, **settings)  # fmt: skip
        torch.manual_seed(3)
        got = sample_group(model, inputs, 6, 10, stop, pad, **settings)
    assert torch.equal(got, want)
    assert len({tuple(r) for r in got.tolist()}) > 1  # the samples do differ


@pytest.mark.parametrize("layout", ["eager", "2d"])
def test_greedy_matches_generate_under_other_attention(loaded, layout, monkeypatch) -> None:
    """Eager attention takes the decoding mask in additive form; an implementation that takes
    no 4D mask (flash attention, which needs a GPU) gets a full-length 2D mask."""
    import medvl.train.rollouts as rollouts

    model, processor = loaded("qwen2_5_vl")
    inputs, pad = _inputs(processor, "image"), processor.tokenizer.pad_token_id
    if layout == "eager":
        model.set_attn_implementation("eager")
    else:
        monkeypatch.setattr(rollouts, "ready_mask", lambda *args: None)
    try:
        with torch.no_grad():
            want = _generate(model, inputs, [pad], pad, do_sample=False, max_new_tokens=8)
            got = sample_group(model, inputs, 2, 8, [pad], pad, do_sample=False)
    finally:
        model.set_attn_implementation("sdpa")
    assert all(torch.equal(row, want[0]) for row in got)


def test_first_token_follows_the_warped_softmax(loaded) -> None:
    """4,000 one-token samples: each likely token's frequency within 4.5 standard errors of
    its probability under temperature, top-k and top-p, and nothing outside the top-k."""
    model, processor = loaded("qwen2_5_vl")
    inputs, pad = _inputs(processor, "image"), processor.tokenizer.pad_token_id
    n, settings = 4000, {"temperature": 0.7, "top_k": 20, "top_p": 0.9}
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1].float()
        torch.manual_seed(0)
        first = sample_group(model, inputs, n, 1, [pad], pad, **settings)[:, 0]
    probs = torch.softmax(sampling_warpers(**settings)(inputs["input_ids"], logits), -1)[0]
    counts = torch.bincount(first, minlength=probs.numel()).double() / n
    assert counts[probs == 0].sum() == 0
    likely = probs > 0.02
    assert likely.sum() >= 2
    se = (probs * (1 - probs) / n).sqrt()
    assert ((counts - probs).abs()[likely] < 4.5 * se[likely]).all()


def test_the_prompt_and_scan_go_through_once(loaded) -> None:
    """One vision pass over the scan's patches and one prefill row for the prompt; generate
    (transformers 5 encodes the scan once too) prefills the prompt G times."""
    model, processor = loaded("qwen2_5_vl")
    inputs, pad = _inputs(processor, "video"), processor.tokenizer.pad_token_id
    inner = _vlm(model).model
    patches: list[int] = []
    rows: list[tuple[int, int]] = []  # (batch, length) of each language-model forward

    def on_lm(module, args, kwargs, out) -> None:
        x = kwargs.get("inputs_embeds")
        x = kwargs["input_ids"] if x is None else x
        rows.append((x.shape[0], x.shape[1]))

    hooks = [
        inner.visual.register_forward_hook(lambda m, args, out: patches.append(args[0].shape[0])),
        inner.language_model.register_forward_hook(on_lm, with_kwargs=True),
    ]
    prompt_len = inputs["input_ids"].shape[1]
    try:
        with torch.no_grad():
            sample_group(model, inputs, 8, 4, [pad], pad)
            ours = (sum(patches), [r for r in rows if r[1] == prompt_len])
            patches.clear(), rows.clear()
            _generate(model, inputs, [pad], pad, do_sample=True, max_new_tokens=4,
                      num_return_sequences=8)  # fmt: skip
            theirs = [r for r in rows if r[1] == prompt_len]
    finally:
        for hook in hooks:
            hook.remove()
    assert ours == (inputs["pixel_values_videos"].shape[0], [(1, prompt_len)])
    assert theirs == [(8, prompt_len)]
    # Every later forward decodes one token for the G rows.
    assert all(r == (8, 1) for r in rows if r[1] != prompt_len)


def test_needs_one_prompt(loaded) -> None:
    model, processor = loaded("qwen2_5_vl")
    inputs = _inputs(processor, "image")
    two = {**inputs, "input_ids": inputs["input_ids"].repeat(2, 1)}
    with pytest.raises(ValueError, match="batch 1"):
        sample_group(model, two, 2, 4, [0], 0)

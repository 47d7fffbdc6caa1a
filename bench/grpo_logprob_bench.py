"""Time GRPO per-token log-probs: naive (G full forwards) vs shared prefix (scan encoded once).

On the ``small`` tiny model of a family, one prompt with a 16-frame video (or a 512x512 image)
and G completions of L tokens; median wall time over a few repeats, one torch thread, without
gradients (old / reference log-probs) and with forward + backward (the training step)::

    python bench/grpo_logprob_bench.py --family qwen2_5_vl --prompt video -G 8 -L 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from medvl.model import build_tiny_model, load_vlm  # noqa: E402
from medvl.model.inputs import build_messages, prepare_inputs  # noqa: E402
from medvl.train.logprobs import completion_logprobs, shared_prefix_logprobs  # noqa: E402

TEXT = (
    "<think>The medial meniscus shows a linear high signal that reaches the inferior articular "
    "surface on two consecutive slices, with no displaced fragment and a normal lateral "
    "meniscus; the cartilage is preserved.</think><answer>yes</answer> "
)


def _prompt(processor, kind: str, frames: int, size: int) -> dict:
    rng = np.random.default_rng(0)

    def picture(side: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))

    if kind == "video":
        messages = build_messages("Is there a tear?", video=[picture(size) for _ in range(frames)])
    else:
        messages = build_messages("Is there a tear?", image=picture(512))
    return dict(prepare_inputs(processor, messages))


def _completions(processor, groups: int, length: int) -> torch.Tensor:
    pool = torch.tensor(processor.tokenizer(TEXT * 4, add_special_tokens=False)["input_ids"])
    generator = torch.Generator().manual_seed(0)
    return pool[torch.randint(len(pool), (groups, length), generator=generator)]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--size", default="small")
    parser.add_argument("--prompt", choices=["video", "image"], default="video")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("-G", "--groups", type=int, default=8)
    parser.add_argument("-L", "--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor = load_vlm(build_tiny_model(args.family, args.size), dtype=torch.float32)
    model.eval()
    inputs = _prompt(processor, args.prompt, args.frames, args.frame_size)
    ids = _completions(processor, args.groups, args.length)
    vision = int(inputs["mm_token_type_ids"].ne(0).sum())
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.family} {args.size} ({n_params / 1e6:.1f}M params), {args.prompt} prompt: "
        f"P={inputs['input_ids'].shape[1]} tokens ({vision} vision), "
        f"G={args.groups}, L={args.length}, threads={args.threads}, "
        f"median of {args.repeats}"
    )

    with torch.no_grad():
        naive = completion_logprobs(model, inputs, ids)
        shared = shared_prefix_logprobs(model, inputs, ids)
    diff = (naive - shared).abs().max().item()

    def no_grad(fn):
        def run() -> None:
            with torch.no_grad():
                fn(model, inputs, ids)

        return run

    def with_grad(fn):
        def run() -> None:
            model.zero_grad(set_to_none=True)
            fn(model, inputs, ids).mean().backward()

        return run

    print(f"{'mode':<22}{'naive s':>10}{'shared s':>10}{'naive/shared':>14}")
    for label, wrap in (("no_grad", no_grad), ("forward+backward", with_grad)):
        t_naive = _time(wrap(completion_logprobs), args.repeats)
        t_shared = _time(wrap(shared_prefix_logprobs), args.repeats)
        print(f"{label:<22}{t_naive:>10.3f}{t_shared:>10.3f}{t_naive / t_shared:>13.2f}x")
    print(f"max |naive - shared| log-prob: {diff:.2e}")


if __name__ == "__main__":
    main()

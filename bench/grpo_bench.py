"""medvl's GRPO step against TRL's ``GRPOTrainer``, side by side, each in its own process.

The same small random-init Qwen2.5-VL (`medvl.model.tiny`, size ``small``), fp32, full
fine-tuning, AdamW at the same learning rate, G = 8 completions of up to 32 new tokens, one
prompt per step, and a reward with spread in every group (the share of completion token ids
divisible by 7: a group of equal rewards would let either side skip its backward). Cases:

* ``a``: a knee phantom volume as 16 frames of 224² (medvl: video frames, its native path;
  TRL: the same 16 rendered frames as an ``images`` list, since its GRPO drops video inputs);
* ``b``: one 2D chest phantom at 448²;
* ``c``: medvl given the volume as 32 video frames (as many vision tokens as TRL's 16 images),
  compared with TRL's case ``a``: the shared prefill measured apart from the input format.

Each at β = 0 and β = 0.04. Printed per case: the median step time of each side (first step
excluded), their ratio, each process's peak RSS and their ratio, and the patches that went
through the vision tower per step in units of one encoding of the prompt's scan::

    python bench/grpo_bench.py                     # all cases, 4 steps each (~10 min, 2 cores)
    python bench/grpo_bench.py --cases a --betas 0 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

G, NEW_TOKENS, LR = 8, 32, 1e-6
CASES = {  # case -> (modality, view settings for medvl, TRL case it is compared with)
    "a": ("knee", {"view": "frames", "n_frames": 16, "size": 224}, "a"),
    "b": ("chest", {"size": 448}, "b"),
    "c": ("knee", {"view": "frames", "n_frames": 32, "size": 224}, "a"),
}


def spread_reward(completions, completion_ids, **kwargs) -> list[float]:
    """Share of token ids divisible by 7: spread in every group, any model."""
    return [sum(1 for i in ids if i % 7 == 0) / max(len(ids), 1) for ids in completion_ids]


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class _VisionCounter:
    """Counts patch rows through the vision towers of the given models (the policy and a
    reference copy): a forward hook on each patch embedding, which runs only when the tower
    really encodes (a reused output skips it)."""

    def __init__(self, *models) -> None:
        self.rows = 0
        for model in models:
            for module in [] if model is None else model.modules():
                if type(module).__name__.endswith("PatchEmbed"):
                    module.register_forward_hook(self._hook)

    def _hook(self, module, args, out) -> None:
        self.rows += int(args[0].shape[0])


def _result(times: list[float], scan_passes: float) -> dict:
    return {"times": times, "rss_gb": _peak_rss_gb(), "scan_passes": scan_passes}


def _data(root: Path, modality: str) -> Path:
    from medvl.data.phantom_samples import generate_phantom_dataset

    return generate_phantom_dataset(root, n=1, modalities=(modality,), progress=False)


def run_medvl(case: str, beta: float, steps: int, model_path: str, work: Path) -> dict:
    import torch

    from medvl.data.dataset import DatasetConfig
    from medvl.train.grpo import GRPOConfig, GRPOTrainer

    modality, view, _ = CASES[case]
    config = GRPOConfig(
        model=model_path, train_manifest=str(_data(work / "data", modality)),
        dataset=DatasetConfig(**view, cache="memory"), max_train_samples=1,
        output_dir=str(work / "medvl"), lora=None, lr=LR, max_steps=steps, batch_size=1,
        num_generations=G, max_new_tokens=NEW_TOKENS, beta=beta, save_every=None,
        max_grad_norm=1.0, report_to="none", progress=False, seed=0,
    )  # fmt: skip
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    trainer = GRPOTrainer(config, reward_funcs=[spread_reward])
    counter = _VisionCounter(trainer.vlm.model, trainer.ref_model)
    item = trainer.train_dataset[0]
    scan_rows = sum(int(v.shape[0]) for k, v in trainer.encode(item).inputs.items()
                    if k in ("pixel_values", "pixel_values_videos"))  # fmt: skip
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step([item])
        times.append(time.perf_counter() - start)
    return _result(times, counter.rows / scan_rows / steps)


def run_trl(case: str, beta: float, steps: int, model_path: str, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from medvl.data.dataset import DatasetConfig, MedVLDataset
    from medvl.model import load_vlm
    from medvl.model.inputs import show_scan

    modality, view, _ = CASES[case]
    settings = DatasetConfig(**view)
    item = MedVLDataset(_data(work / "data", modality), settings)[0]
    shown = show_scan(item["scan"], settings)
    pictures = shown.content.get("video") or [shown.content["image"]]
    question = item["sample"].question
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": question}],
                                  "images": pictures}] * (steps + 1))  # fmt: skip
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model, processor = load_vlm(model_path, dtype=torch.float32)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    args = GRPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=G, num_generations=G,
        max_completion_length=NEW_TOKENS, learning_rate=LR, beta=beta, max_steps=steps,
        lr_scheduler_type="constant", temperature=1.0, top_p=1.0, top_k=0, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
        max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.0,
        disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = GRPOTrainer(model=model, reward_funcs=[spread_reward], args=args,
                          train_dataset=dataset, processing_class=processor,
                          callbacks=[Timer()])  # fmt: skip
    counter = _VisionCounter(trainer.model, getattr(trainer, "ref_model", None))
    scan_rows = int(processor.image_processor(images=pictures, return_tensors="pt")
                    ["pixel_values"].shape[0])  # fmt: skip
    trainer.train()
    return _result(times, counter.rows / scan_rows / steps)


def _side(name: str, case: str, beta: float, steps: int, model_path: str) -> dict:
    cmd = [sys.executable, __file__, "--side", name, "--cases", case, "--betas", str(beta),
           "--steps", str(steps), "--model", model_path]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"{name} {case} beta={beta} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.04])
    parser.add_argument("--steps", type=int, default=4, help="steps per side (first excluded)")
    parser.add_argument("--model", default=None, help="model folder (default: tiny small)")
    parser.add_argument("--side", choices=["medvl", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        from medvl.model import build_tiny_model

        args.model = str(build_tiny_model("qwen2_5_vl", "small"))
    if args.side:  # one side of one case, in this process: print its JSON
        run = run_medvl if args.side == "medvl" else run_trl
        with tempfile.TemporaryDirectory() as work:
            result = run(args.cases[0], args.betas[0], args.steps, args.model, Path(work))
        print(json.dumps(result))
        return
    trl_cache: dict[tuple[str, float], dict] = {}
    print(f"G={G}, {NEW_TOKENS} new tokens, one prompt per step, fp32 full fine-tuning, "
          f"{args.steps} steps per side (median of steps 2..), model {args.model}")  # fmt: skip
    header = (f"{'case':<5}{'beta':>6}{'medvl s/step':>14}{'TRL s/step':>12}{'speed-up':>10}"
              f"{'medvl RSS GB':>14}{'TRL RSS GB':>12}{'RSS ratio':>11}"
              f"{'scan passes/step medvl':>24}{'TRL':>6}")  # fmt: skip
    print(header)
    for case in args.cases:
        for beta in args.betas:
            ours = _side("medvl", case, beta, args.steps, args.model)
            key = (CASES[case][2], beta)
            if key not in trl_cache:
                trl_cache[key] = _side("trl", key[0], beta, args.steps, args.model)
            theirs = trl_cache[key]
            t_ours = statistics.median(ours["times"][1:] or ours["times"])
            t_theirs = statistics.median(theirs["times"][1:] or theirs["times"])
            print(f"{case:<5}{beta:>6}{t_ours:>14.2f}{t_theirs:>12.2f}{t_theirs / t_ours:>9.1f}x"
                  f"{ours['rss_gb']:>14.2f}{theirs['rss_gb']:>12.2f}"
                  f"{ours['rss_gb'] / theirs['rss_gb']:>11.2f}"
                  f"{ours['scan_passes']:>24.1f}{theirs['scan_passes']:>6.1f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

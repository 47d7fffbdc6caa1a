"""The quickstart: a small offline model looks at real scans, then learns from phantoms.

Run it with ``make quickstart`` (fresh clone) or ``medvl quickstart``. Part one builds the
``small`` random-init model (or loads ``--model`` from a folder: the same code path a real
Qwen2.5-VL-3B takes), loads each bundled real scan through ``medvl.scans.load_scan``, shows 2D
scans as one image and volumes as video frames, and prints the answer and how many vision tokens
each scan cost; the model is untrained, so those answers are noise. Part two writes synthetic
phantoms with known lesions, fine-tunes the model with a box head for a few dozen SFT steps,
evaluates it on held-out phantoms (resumable predictions, scored) and writes a report with
confidence intervals and plots. Part three shows the method rather than a bare accuracy: the
tiny Qwen2.5-VL is fine-tuned by SFT on "Is there a nodule" over chest phantoms at the easiest
difficulty, then by GRPO from the SFT checkpoint with the accuracy reward; the base model, SFT
and GRPO answer held-out cases with their own scans and with swapped scans, and GRPO − SFT is
tested on the same questions (`medvl.sft_then_grpo`; docs/learning.md, section 3).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvl.data import read_manifest
from medvl.data.dataset import DatasetConfig
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.eval import evaluate, make_report, read_predictions, summarize
from medvl.eval.runner import EvalConfig
from medvl.model import load_vlm
from medvl.model.generate import ask
from medvl.model.tiny import build_tiny_model
from medvl.scans import ScanError, load_scan
from medvl.scans.examples import example_scans
from medvl.scans.views import scan_to_image, volume_to_frames

QUESTIONS = {
    "CT": "Which organ is shown in this CT slice?",
    "MR": "Describe the anatomy visible in this MRI.",
    "OP": "Is there any sign of diabetic retinopathy in this fundus photograph?",
    "OT": "Is there any abnormality in this image?",
}


# NIfTI and PNG files carry no modality; these are what the bundled examples are (OP is DICOM's
# code for ophthalmic photography). example4d is a 4D fMRI run: the quickstart shows volume 0.
LOAD_OPTIONS = {
    "anatomical": {"modality": "MR"},
    "example4d": {"modality": "MR", "volume": 0},
    "mni152": {"modality": "MR"},
    "retina": {"modality": "OP"},
}

FAST = {"sft_steps": 8, "grpo_steps": 4, "proof_sft_steps": 8, "proof_cases": 24,
        "proof_test_cases": 12}  # fmt: skip
"""``medvl quickstart --fast``: every stage runs, on too little to learn (a few minutes)."""


def _question(modality: str, volumetric: bool) -> str:
    question = QUESTIONS.get(modality, QUESTIONS["OT"])
    return question.replace("slice", "volume") if volumetric else question


@dataclass
class QuickstartResult:
    """What the quickstart did.

    Attributes:
        scans: one dict per bundled real scan: name, modality, shape, vision_tokens, answer,
            seconds.
        losses: the SFT loss at each logged step.
        grounding: one dict per held-out grounding question: id, anatomy, box, truth, iou.
        checkpoint: the fine-tuned model's folder.
        report: the evaluation report (``report.md``) of the fine-tuned model.
        stages: part three's `medvl.sft_then_grpo.StagesResult` (base, SFT, GRPO; GRPO − SFT).
    """

    scans: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grounding: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    report: Path | None = None
    stages: Any = None


def run_quickstart(
    family: str = "qwen2_5_vl",
    size: str = "small",
    n_frames: int = 16,
    max_new_tokens: int = 24,
    model_path: str | Path | None = None,
    sft_steps: int = 40,
    out_dir: str | Path | None = None,
    grpo_steps: int = 400,
    proof_sft_steps: int = 600,
    proof_cases: int = 800,
    proof_test_cases: int = 300,
) -> QuickstartResult:
    """Ask a model about each bundled real scan, then fine-tune it on phantoms and ask again.

    Args:
        family: tiny model family to build when ``model_path`` is not given.
        size: tiny model size (``tiny`` or ``small``).
        n_frames: video frames per volume (even).
        max_new_tokens: generation budget per answer.
        model_path: a local Qwen-VL checkpoint folder to use instead of a tiny model.
        sft_steps: SFT optimizer steps on the phantoms (0 skips part two).
        out_dir: where phantoms and the fine-tuned model go (default: a temporary folder).
        grpo_steps: GRPO steps of part three (0 skips part three; ~7 minutes on 2 cores).
        proof_sft_steps: SFT steps of part three, before GRPO.
        proof_cases: training chest phantoms of part three.
        proof_test_cases: held-out chest phantoms of part three.

    Returns:
        A :class:`QuickstartResult`.
    """
    torch.manual_seed(0)
    if model_path is None:
        print(f"[1/6] building the {size} {family} model (offline, cached after the first run)")
        model_path = build_tiny_model(family=family, size=size)
    result = QuickstartResult(scans=tour_real_scans(model_path, n_frames, max_new_tokens))
    if sft_steps <= 0 and grpo_steps <= 0:
        return result
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="medvl-quickstart-"))
    if sft_steps > 0:
        teach_on_phantoms(model_path, out, sft_steps, result)
    if grpo_steps > 0:
        result.stages = prove_grpo(out / "sft_then_grpo", proof_sft_steps, grpo_steps,
                                   proof_cases, proof_test_cases)  # fmt: skip
    return result


def tour_real_scans(model_path: str | Path, n_frames: int, max_new_tokens: int) -> list[dict]:
    """Part one: the model answers one question about each bundled real scan."""
    print(f"[2/6] loading {model_path}")
    model, processor = load_vlm(model_path, dtype=torch.float32, device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"      {type(model).__name__}: {n_params / 1e6:.2f} M parameters")

    scans = example_scans()
    print(f"[3/6] asking about {len(scans)} bundled real scans")
    rows = []
    for name, path in scans.items():
        try:
            scan = load_scan(path, **LOAD_OPTIONS.get(name, {}))
        except ScanError as err:  # a broken example should not hide the others
            print(f"  - {name}: skipped ({err})")
            continue
        volumetric = scan.meta["spatial_ndim"] == 3
        question = _question(scan.meta["modality"], volumetric)
        start = time.perf_counter()
        if volumetric:
            view = volume_to_frames(scan, n_frames=n_frames, axis=2)
            result = ask(model, processor, question, video=view.frames,
                         max_new_tokens=max_new_tokens)
            first, last = view.slice_indices[0], view.slice_indices[-1]
            shown = f"{len(view.frames)} frames, slices {first}..{last}"
        else:
            image = scan_to_image(scan)
            result = ask(model, processor, question, image=image, max_new_tokens=max_new_tokens)
            shown = f"image {image.width}x{image.height}"
        seconds = time.perf_counter() - start
        shape = "x".join(str(s) for s in scan.shape[1:])
        print(f"  - {name} [{scan.meta['modality']}, {shape}] as {shown}")
        print(f"    Q: {question}")
        print(f"    A: {result.text!r}")
        print(f"    vision tokens: {result.vision_tokens}, new tokens: {result.new_tokens}, "
              f"{seconds:.2f} s")
        rows.append({
            "name": name, "modality": scan.meta["modality"], "shape": shape,
            "vision_tokens": result.vision_tokens, "answer": result.text, "seconds": seconds,
        })
    total = sum(r["vision_tokens"] for r in rows)
    print(f"      {len(rows)} scans, {total} vision tokens in all "
          "(the model is random-init, so the answers are noise until it is trained)")
    return rows


def teach_on_phantoms(
    model_path: str | Path, out: Path, steps: int, result: QuickstartResult
) -> None:
    """Part two: SFT with a box head on phantoms, then grounding on held-out phantoms."""
    # Imported here: the trainer pulls in accelerate and TensorBoard, which part one never needs.
    from medvl.train.sft import SFTTrainer
    from medvl.train.sft_config import SFTConfig

    kinds = ("chest", "fundus", "knee")
    train = generate_phantom_dataset(out / "phantoms", n=4, seed=0, modalities=kinds,
                                     progress=False)  # fmt: skip
    held_out = generate_phantom_dataset(out / "held_out", n=1, seed=1, modalities=kinds,
                                        progress=False)  # fmt: skip
    print(f"[4/6] fine-tuning for {steps} steps on {train} (LM loss + box head)")
    config = SFTConfig(
        model=str(model_path), train_manifest=str(train), output_dir=str(out / "sft"),
        heads=["box"], lr=1e-3, warmup_steps=2, max_steps=steps, batch_size=2,
        save_every=None, log_every=max(1, steps // 8), report_to="none", seed=0,
        dataset=DatasetConfig(view="frames", n_frames=4, size=64, cache="memory"),
    )  # fmt: skip
    trainer = SFTTrainer(config)
    result.checkpoint = trainer.train()
    result.losses = [r["loss"] for r in trainer.history if "loss" in r]
    print(f"      loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; "
          f"saved to {result.checkpoint}")

    print("[5/6] evaluating the fine-tuned model on held-out phantoms")
    eval_config = EvalConfig(
        model=str(result.checkpoint), manifest=str(held_out), batch_size=4, max_new_tokens=8,
        output=str(out / "eval" / "predictions.jsonl"), progress=False,
    )  # fmt: skip
    predictions = evaluate(eval_config)
    truth = {s.id: s.box for s in read_manifest(held_out)}
    for row in read_predictions(predictions):
        if row["answer_type"] != "grounding":
            continue
        print(f"  - {row['id']}: box {_fmt(row['box'])} (from the {row['box_source']}), "
              f"truth {_fmt(truth[row['id']])}, IoU {row['iou']:.2f}")
        result.grounding.append({"id": row["id"], "anatomy": row["anatomy"], "box": row["box"],
                                 "truth": truth[row["id"]], "iou": row["iou"]})  # fmt: skip
    summary = summarize(predictions)
    result.report = make_report([predictions], out / "report")
    print(f"      accuracy {summary['accuracy']:.2f} and mean IoU {summary['mean_iou']:.2f} on "
          f"{summary['n']} held-out questions after {steps} steps (train longer, or start from a "
          f"real checkpoint, for useful answers); report: {result.report}")


def prove_grpo(out: Path, sft_steps: int, grpo_steps: int, cases: int, test_cases: int) -> Any:
    """Part three: SFT, then GRPO from it; does each stage make the model better?"""
    from medvl.sft_then_grpo import run_sft_then_grpo

    print(f"[6/6] SFT then GRPO: the tiny Qwen2.5-VL learns 'Is there a nodule' on {cases} "
          f"chest phantoms ({sft_steps} SFT steps), then GRPO from that checkpoint with the "
          f"accuracy reward and a KL term to the SFT model ({grpo_steps} steps, 8 answers per "
          f"question); the base model, SFT "
          f"and GRPO answer {test_cases} held-out cases, with their own scans and with other "
          "cases' scans")  # fmt: skip
    stages = run_sft_then_grpo(out, n_train=cases, n_test=test_cases, sft_steps=sft_steps,
                               grpo_steps=grpo_steps, progress=True)  # fmt: skip
    table = stages.table
    print()
    print(table.to_markdown())
    if len(stages.by_type) > 1:
        for kind, part in stages.by_type.items():
            print(f"\n{kind} questions:\n{part.to_markdown()}")
    print()
    sft, grpo = table.row("sft"), table.row("grpo")
    gain = table.gain
    verdict = (
        "GRPO beats SFT (the CI of the difference is above 0, GRPO's above the prior)"
        if table.gain_is_real else "GRPO's gain over SFT is not shown"
    )  # fmt: skip
    print(f"done: SFT {sft.accuracy.estimate:.2f}, GRPO {grpo.accuracy.estimate:.2f} with their "
          f"own scans, {grpo.swapped.estimate:.2f} with swapped scans (chance "
          f"{table.chance:.2f}); GRPO − SFT {gain.difference:+.2f} [{gain.low:.2f}, "
          f"{gain.high:.2f}]: {verdict}")  # fmt: skip
    print("      seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.seconds.items()))
    print(f"      report (base, SFT and GRPO side by side, worst cases drawn): "
          f"{stages.report.with_suffix('.html')}")
    print(f"      GRPO checkpoint: {stages.grpo}")
    print(f"      open it in the demo (pip install -e '.[demo]' first): "
          f"medvl demo --model {stages.grpo}")  # fmt: skip
    return stages


def _fmt(box: list[float] | None) -> str:
    return "none" if box is None else "[" + ", ".join(f"{v:.2f}" for v in box) + "]"

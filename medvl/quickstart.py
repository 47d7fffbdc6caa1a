"""The quickstart: a small offline model looks at real scans, then the whole method on phantoms.

Run it with ``make quickstart`` (fresh clone) or ``medvl quickstart``. Part one builds the
``small`` random-init model (or loads ``--model`` from a folder: the same code path a real
Qwen2.5-VL-3B takes), loads each bundled real scan through ``medvl.scans.load_scan``, shows 2D
scans as one image and volumes as video frames, and prints the answer and how many vision tokens
each scan cost; the model is untrained, so those answers are noise. Part two is the method of
MedVLM-R1 end to end (`medvl.sft_then_grpo`): phantoms of all three kinds with known findings
(training, validation and held-out cases from different seeds), SFT with a box head of the tiny
Qwen2.5-VL (or of ``--model``)
("Is there a pulmonary nodule" and how severe it is on chest X-rays, where is the lesion on
fundus photographs and knee MRI volumes), GRPO from the SFT checkpoint with verifiable rewards
(format and accuracy on the closed question, the grade's distance on the severity question, the
box head's IoU on the lesions, the head trained as a Gaussian policy), and the base model, SFT
and GRPO on the held-out cases with their own and with swapped scans: accuracy and mean IoU per
answer type with 95% CIs beside chance, the prior and the training mean box, GRPO − SFT with a
paired bootstrap CI and McNemar's test, and the report of the three stages (docs/learning.md,
section 3).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvl.data import read_manifest
from medvl.eval.predictions import read_predictions
from medvl.experiments import PhantomQuestions
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

PHANTOMS = (
    PhantomQuestions("chest", ("closed", "severity"), "nodule", train_cases=800,
                     test_cases=2700, val_cases=100),
    PhantomQuestions("fundus", ("grounding",), train_cases=80, test_cases=30, val_cases=10),
    PhantomQuestions("knee", ("grounding",), train_cases=80, test_cases=30, val_cases=10),
)
"""Part two's questions: "Is there a pulmonary nodule" and, where there is one, its grade on
easiest-level chest X-rays (the question the tiny model learns to read, docs/learning.md), and
the lesion's box on fundus photographs and knee MRI volumes, answered by the box head. 2,700
held-out chest cases (about 1,520 closed and 670 severity questions): with 900 the severity
gain's CI was ±0.07 and held 0 (+0.059 [−0.014, 0.131]); the 1,800 cases after those showed it
alone (+0.075 [0.022, 0.128]; docs/learning.md, section 3)."""

PIPELINE_MODEL = "tiny:qwen2_5_vl-tiny"
"""Part two's model when no ``--model`` is given: the build its recipe was measured on."""

GRPO = {"rewards": ("format", "accuracy", "box_head", "severity"),
        "grpo_types": ("closed", "severity", "grounding"), "beta": 0.04, "dynamic_sampling": 4,
        "box_head_std": 0.1}  # fmt: skip
"""Part two's GRPO settings (`medvl.sft_then_grpo.run_sft_then_grpo`); what else was tried and
what each gave: docs/learning.md, section 3."""

FAST = {"sft_steps": 8, "grpo_steps": 2, "phantoms": (
    PhantomQuestions("chest", ("closed", "severity"), "nodule", train_cases=24, test_cases=12,
                     val_cases=4),
    PhantomQuestions("fundus", ("grounding",), train_cases=4, test_cases=2, val_cases=1),
    PhantomQuestions("knee", ("grounding",), train_cases=4, test_cases=2, val_cases=1),
)}  # fmt: skip
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
        stages: part two's `medvl.sft_then_grpo.StagesResult` (base, SFT, GRPO; GRPO − SFT;
            the checkpoints and the report), or None when it was skipped.
    """

    scans: list[dict] = field(default_factory=list)
    stages: Any = None


def run_quickstart(
    family: str = "qwen2_5_vl",
    size: str = "small",
    n_frames: int = 16,
    max_new_tokens: int = 24,
    model_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    sft_steps: int = 600,
    grpo_steps: int = 400,
    phantoms: tuple[PhantomQuestions, ...] = PHANTOMS,
) -> QuickstartResult:
    """Ask a model about each bundled real scan, then run SFT and GRPO on phantoms and test both.

    Args:
        family: tiny model family to build when ``model_path`` is not given (part one).
        size: tiny model size (``tiny`` or ``small``; part one).
        n_frames: video frames per volume (even).
        max_new_tokens: generation budget per answer of part one.
        model_path: a local Qwen-VL checkpoint folder to use instead of the tiny models (parts
            one and two).
        out_dir: where phantoms, checkpoints and predictions go (default: a temporary folder).
        sft_steps: SFT steps of part two (0 skips part two).
        grpo_steps: GRPO steps of part two, from the SFT checkpoint (0 skips part two).
        phantoms: part two's questions and case counts.

    Returns:
        A :class:`QuickstartResult`.
    """
    torch.manual_seed(0)
    # Part two's recipe was measured on the tiny build; a given folder is trained instead.
    learner = PIPELINE_MODEL if model_path is None else str(model_path)
    if model_path is None:
        print(f"[1/5] building the {size} {family} model (offline, cached after the first run)")
        model_path = build_tiny_model(family=family, size=size)
    result = QuickstartResult(scans=tour_real_scans(model_path, n_frames, max_new_tokens))
    if sft_steps <= 0 or grpo_steps <= 0:
        return result
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="medvl-quickstart-"))
    result.stages = method_on_phantoms(out / "sft_then_grpo", sft_steps, grpo_steps, phantoms,
                                       learner)  # fmt: skip
    return result


def tour_real_scans(model_path: str | Path, n_frames: int, max_new_tokens: int) -> list[dict]:
    """Part one: the model answers one question about each bundled real scan."""
    print(f"[2/5] loading {model_path}")
    model, processor = load_vlm(model_path, dtype=torch.float32, device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"      {type(model).__name__}: {n_params / 1e6:.2f} M parameters")

    scans = example_scans()
    print(f"[3/5] asking about {len(scans)} bundled real scans")
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


def method_on_phantoms(
    out: Path, sft_steps: int, grpo_steps: int, phantoms: tuple[PhantomQuestions, ...],
    model: str = PIPELINE_MODEL,
) -> Any:  # fmt: skip
    """Part two: SFT with a box head, GRPO from it, every stage on held-out phantoms."""
    from medvl.sft_then_grpo import run_sft_then_grpo

    asked = "; ".join(
        f"{p.kind} {'/'.join(p.types)}" + (f" ({p.question})" if p.question else "")
        + f", {p.train_cases} / {p.val_cases} / {p.test_cases} cases" for p in phantoms
    )  # fmt: skip
    print(f"[4/5] the method on phantoms ({asked}; training / validation / held-out cases from "
          f"different seeds): SFT of {model} with a box head ({sft_steps} steps), "
          f"then GRPO from that checkpoint ({grpo_steps} steps, 8 answers per question, rewards "
          f"{', '.join(GRPO['rewards'])} on the {'/'.join(GRPO['grpo_types'])} questions, the "
          f"box head a Gaussian policy (σ {GRPO['box_head_std']}), KL to the SFT "
          "model)")  # fmt: skip
    stages = run_sft_then_grpo(out, phantoms, sft_steps=sft_steps, grpo_steps=grpo_steps,
                               heads=("box",), model=model, progress=True, **GRPO)  # fmt: skip
    if stages.sft_val_loss is not None:
        print(f"      SFT's loss on the validation cases at its end: {stages.sft_val_loss:.3f}")
    print("[5/5] the base model, SFT and GRPO on the held-out cases, with their own scans and "
          "with other cases' scans (a model that reads the scan drops to chance there)")
    tables = stages.by_type if len(stages.by_type) > 1 else {"all": stages.table}
    for kind, table in tables.items():
        print(f"\n{kind} questions:\n{table.to_markdown()}")
    print()
    for kind, table in tables.items():
        sft, grpo = table.row("sft"), table.row("grpo")
        if kind == "grounding" and table.iou_gain is not None:
            said = (f"mean IoU SFT {sft.mean_iou.estimate:.2f}, GRPO {grpo.mean_iou.estimate:.2f}"
                    f" (training mean box {table.mean_box_iou:.2f}); GRPO − SFT "
                    f"{_diff(table.iou_gain)}")  # fmt: skip
        else:
            said = (f"SFT {sft.accuracy.estimate:.2f}, GRPO {grpo.accuracy.estimate:.2f} with "
                    f"their own scans, {grpo.swapped.estimate:.2f} with swapped scans (chance "
                    f"{table.chance:.2f}, prior {table.prior:.2f}); GRPO − SFT "
                    f"{_diff(table.gain)} (McNemar p = {table.mcnemar.p_value:.2g})")  # fmt: skip
        verdict = ("GRPO beats SFT and what ignores the scan" if table.gain_is_real
                   else "GRPO's gain over SFT is not shown")  # fmt: skip
        print(f"{kind}: {said}: {verdict}")
    truth = {s.id: s.box for s in read_manifest(stages.test)}
    shown: set[str] = set()
    for row in read_predictions(stages.predictions["grpo"]):
        if row["answer_type"] == "grounding" and row["anatomy"] not in shown:
            shown.add(row["anatomy"])
            print(f"  - {row['id']}: GRPO's box {_fmt(row['box'])} (from the "
                  f"{row['box_source']}), truth {_fmt(truth[row['id']])}, IoU {row['iou']:.2f}")
    print("      seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.seconds.items()))
    print(f"      report (base, SFT and GRPO side by side, worst cases drawn): "
          f"{stages.report.with_suffix('.html')}")
    print(f"      GRPO checkpoint: {stages.grpo}")
    print(f"      open it in the demo (pip install -e '.[demo]' first): "
          f"medvl demo --model {stages.grpo}")  # fmt: skip
    return stages


def _diff(d: Any) -> str:
    return f"{d.difference:+.3f} [{d.low:.3f}, {d.high:.3f}]"


def _fmt(box: list[float] | None) -> str:
    return "none" if box is None else "[" + ", ".join(f"{v:.2f}" for v in box) + "]"

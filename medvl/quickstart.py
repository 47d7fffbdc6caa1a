"""The quickstart: a small offline model looks at real scans that packages ship.

Run it with ``make quickstart`` (fresh clone) or ``medvl quickstart``. It builds the ``small``
random-init model (or loads ``--model`` from a folder: the same code path a real Qwen2.5-VL-3B
takes), loads each bundled scan through ``medvl.scans.load_scan``, shows 2D scans as one image and
volumes as video frames, and prints the answer and how many vision tokens each scan cost. The
model is untrained, so its answers are noise; the point is the plumbing, end to end.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

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


def _question(modality: str, volumetric: bool) -> str:
    question = QUESTIONS.get(modality, QUESTIONS["OT"])
    return question.replace("slice", "volume") if volumetric else question


def run_quickstart(
    family: str = "qwen2_5_vl",
    size: str = "small",
    n_frames: int = 16,
    max_new_tokens: int = 24,
    model_path: str | Path | None = None,
) -> list[dict]:
    """Ask a model one question about each bundled real scan and print what happened.

    Args:
        family: tiny model family to build when ``model_path`` is not given.
        size: tiny model size (``tiny`` or ``small``).
        n_frames: video frames per volume (even).
        max_new_tokens: generation budget per answer.
        model_path: a local Qwen-VL checkpoint folder to use instead of a tiny model.

    Returns:
        One dict per scan: name, modality, shape, vision_tokens, answer, seconds.
    """
    torch.manual_seed(0)
    if model_path is None:
        print(f"[1/3] building the {size} {family} model (offline, cached after the first run)")
        model_path = build_tiny_model(family=family, size=size)
    print(f"[2/3] loading {model_path}")
    model, processor = load_vlm(model_path, dtype=torch.float32, device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"      {type(model).__name__}: {n_params / 1e6:.2f} M parameters")

    scans = example_scans()
    print(f"[3/3] asking about {len(scans)} bundled real scans")
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
    print(f"done: {len(rows)} scans, {total} vision tokens in all "
          "(the model is random-init, so the answers are noise until it is trained)")
    return rows

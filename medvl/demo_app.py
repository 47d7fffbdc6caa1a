"""medvl's Gradio demo: upload a scan, scroll its slices, ask, see reasoning, answer and box.

Wiring only: the logic lives in :mod:`medvl.demo_session`. Run ``medvl demo [--model DIR]`` or
``python demo/app.py`` (a tiny random model unless ``--model`` / ``MEDVL_DEMO_MODEL`` names a
checkpoint), or call :func:`build_app`. Needs the ``demo`` extra (``pip install -e ".[demo]"``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from medvl.demo_session import ANSWER_TYPES, DemoSession
from medvl.model import MedVLM, build_tiny_model
from medvl.model.medvlm_config import HEADS_NAME
from medvl.scans import ScanError
from medvl.scans.examples import example_scans
from medvl.scans.phantoms import make_knee_case, write_case


def _examples() -> dict[str, str]:
    found = {name: str(path) for name, path in example_scans().items()}
    phantoms = Path(tempfile.mkdtemp(prefix="medvl-demo-"))
    found["knee phantom (NIfTI)"] = str(write_case(make_knee_case(0), phantoms)["nifti"])
    return found


DISPLAY_SIDE = 512  # a small scan is enlarged to this longer side on screen


def enlarge(image: Any, side: int = DISPLAY_SIDE) -> Any:
    """``image`` scaled up (nearest neighbour, so voxels stay sharp) until its longer side is
    about ``side`` pixels; a picture already that large is returned as it is."""
    if image is None or max(image.size) >= side:
        return image
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def facts(info: dict[str, Any]) -> str:
    """The scan's facts for the screen: no path and no file name (names can carry a patient's
    name)."""
    shape = " × ".join(str(v) for v in info["shape"])
    spacing = " × ".join(f"{v:g}" for v in info["spacing"])
    kind = f"3D volume, {info['n_slices']} slices" if info["ndim"] == 3 else "2D image"
    modality, form = info.get("modality") or "unknown", info.get("format") or "?"
    return f"{kind} · shape {shape} · spacing {spacing} mm · modality {modality} · format {form}"


def build_app(model_path: str | os.PathLike | None = None) -> gr.Blocks:
    """The demo as a ``gr.Blocks``; ``model_path`` defaults to a tiny random Qwen2.5-VL."""
    path = model_path or build_tiny_model("qwen2_5_vl", "small")
    # A checkpoint trained with a box head keeps its own; any other model gets a fresh one.
    has_heads = (Path(path) / HEADS_NAME).is_file()
    session = DemoSession(MedVLM.from_pretrained(path, heads=None if has_heads else ["box"]))
    lock = threading.Lock()  # one model and one loaded scan, shared by all visitors
    examples = _examples()

    def scan_path(upload: str | None, example: str | None) -> str:
        if upload:
            return upload
        if example in examples:
            return examples[example]
        raise gr.Error("Upload a scan or pick an example.")

    def load(upload, example) -> dict[str, Any]:
        try:
            return session.load(scan_path(upload, example))
        except (ScanError, ValueError, OSError) as e:  # the message names the file's problem
            raise gr.Error(f"This scan cannot be shown: {e}") from e

    def show(upload, example):
        if not upload and example not in examples:
            return gr.update(visible=False), None, ""
        with lock:
            info = load(upload, example)
            image = enlarge(session.slice_image())
        if info["ndim"] == 2:  # no slices to scroll: hide the slider, keep its range valid
            return gr.update(visible=False, value=0), image, facts(info)
        n = max(2, info["n_slices"])
        slider = gr.update(minimum=0, maximum=n - 1, value=info["n_slices"] // 2, step=1,
                           visible=True, interactive=True)  # fmt: skip
        return slider, image, facts(info)

    def scroll(upload, example, index):
        with lock:
            load(upload, example)
            return enlarge(session.slice_image(session.clamp(index)))

    def ask(upload, example, index, question, answer_type, options):
        with lock:
            load(upload, example)
            reasoning, answer, box, overlay = session.answer(
                question, answer_type, options, session.clamp(index) if session.is_3d else None
            )
        box_text = "" if box is None else str([round(v, 3) for v in box])
        return reasoning, answer, box_text, enlarge(overlay)

    def stream(upload, example, question, answer_type, options):
        with lock:
            load(upload, example)
            yield from session.stream_answer(question, answer_type, options)

    with gr.Blocks(title="medvl demo") as app:
        gr.Markdown("# medvl demo\nUpload a scan (DICOM, NIfTI, PNG/JPG) or pick an example.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Scan", type="filepath")
                example = gr.Dropdown(choices=list(examples), label="Example", value=None)
                info = gr.Textbox(label="Scan info", interactive=False)
                index = gr.Slider(0, 4095, value=0, step=1, label="Slice", visible=False)
                question = gr.Textbox(label="Question", value="Where is the lesion?")
                answer_type = gr.Dropdown(choices=list(ANSWER_TYPES), value="auto",
                                          label="Answer type")  # fmt: skip
                options = gr.Textbox(label="Options (one per line, e.g. 'A: meniscal tear')",
                                     lines=3)  # fmt: skip
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary")
                    stream_button = gr.Button("Stream reply")
            with gr.Column():
                image = gr.Image(label="Slice", type="pil", elem_id="slice-view")
                reasoning = gr.Textbox(label="Reasoning", lines=4)
                answer = gr.Textbox(label="Answer")
                box = gr.Textbox(label="Box (normalised scan coordinates)")
        upload.change(show, [upload, example], [index, image, info], api_name="load")
        example.change(show, [upload, example], [index, image, info],
                       api_visibility="private")  # fmt: skip
        index.release(scroll, [upload, example, index], image, api_visibility="private")
        ask_button.click(ask, [upload, example, index, question, answer_type, options],
                         [reasoning, answer, box, image], api_name="ask")  # fmt: skip
        stream_button.click(stream, [upload, example, question, answer_type, options],
                            reasoning, api_name="stream")  # fmt: skip
    return app


def main(model_path: str | os.PathLike | None = None, **launch: Any) -> None:
    """Launch the demo on ``model_path`` (default: ``MEDVL_DEMO_MODEL``, else the tiny model);
    ``launch`` goes to ``gr.Blocks.launch`` (``server_name``, ``server_port``, ``share``)."""
    build_app(model_path or os.environ.get("MEDVL_DEMO_MODEL")).launch(**launch)

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

from medvl.demo_session import ANSWER_TYPES, DemoSession
from medvl.model import MedVLM, build_tiny_model
from medvl.model.medvlm_config import HEADS_NAME
from medvl.scans.examples import example_scans
from medvl.scans.phantoms import make_knee_case, write_case


def _examples() -> dict[str, str]:
    found = {name: str(path) for name, path in example_scans().items()}
    phantoms = Path(tempfile.mkdtemp(prefix="medvl-demo-"))
    found["knee phantom (NIfTI)"] = str(write_case(make_knee_case(0), phantoms)["nifti"])
    return found


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

    def show(upload, example):
        if not upload and example not in examples:
            return gr.update(visible=False), None, ""
        with lock:
            info = session.load(scan_path(upload, example))
            image = session.slice_image()
        n = info["n_slices"]
        slider = gr.update(minimum=0, maximum=n - 1, value=n // 2, step=1,
                           visible=info["ndim"] == 3, interactive=info["ndim"] == 3)  # fmt: skip
        return slider, image, str(info)

    def scroll(upload, example, index):
        with lock:
            session.load(scan_path(upload, example))
            return session.slice_image(session.clamp(index))

    def ask(upload, example, index, question, answer_type, options):
        with lock:
            session.load(scan_path(upload, example))
            reasoning, answer, box, overlay = session.answer(
                question, answer_type, options, session.clamp(index) if session.is_3d else None
            )
        return reasoning, answer, "" if box is None else str([round(v, 3) for v in box]), overlay

    def stream(upload, example, question, answer_type, options):
        with lock:
            session.load(scan_path(upload, example))
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
                image = gr.Image(label="Slice", type="pil")
                reasoning = gr.Textbox(label="Reasoning", lines=4)
                answer = gr.Textbox(label="Answer")
                box = gr.Textbox(label="Box (normalised scan coordinates)")
        for trigger in (upload.change, example.change):
            trigger(show, [upload, example], [index, image, info], api_visibility="private")
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

"""medvl's Gradio demo: upload a scan, look through it, ask, watch the reasoning, see the box.

Wiring only: a visitor's scan and answers live in a :class:`~medvl.demo.session.DemoSession`
held in ``gr.State`` (no visitor sees another's scan), the pictures come from
:mod:`medvl.demo.viewer`, uploads go through :mod:`medvl.demo.uploads`. The model is loaded once
and answers one request at a time through Gradio's queue (its position is shown while waiting);
each generation stops after ``timeout`` seconds. Run ``medvl demo [--model DIR]``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from medvl.demo.session import ANSWER_TYPES, DemoSession, against_options, truth_overlays
from medvl.demo.uploads import gather_upload
from medvl.demo.viewer import MANUAL, PLANES
from medvl.model import MedVLM, build_tiny_model
from medvl.model.medvlm_config import HEADS_NAME
from medvl.scans import ScanError
from medvl.scans.examples import example_scans
from medvl.scans.phantoms import make_chest_case, make_fundus_case, make_knee_case, write_case

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = "512mb"
TIMEOUT_S = 120.0  # one generation's limit
QUEUE_SIZE = 32  # visitors waiting for the model beyond this are turned away
N_OPTIONS = 5


def _examples(root: Path) -> dict[str, tuple[str, list]]:
    """Example name -> (path, known lesions): the packages' real scans, and one phantom of each
    kind, whose lesions are known and drawn in green."""
    found: dict[str, tuple[str, list]] = {
        name: (str(path), []) for name, path in example_scans().items()
    }
    for label, make, kind in (("knee phantom (MRI volume)", make_knee_case, "nifti"),
                              ("chest phantom (X-ray)", make_chest_case, "dicom"),
                              ("fundus phantom (photo)", make_fundus_case, "png")):  # fmt: skip
        case = next(c for c in map(make, range(50)) if truth_overlays(c))  # one with a lesion
        found[label] = (str(write_case(case, root)[kind]), truth_overlays(case))
    return found


def _uploads_only(component: gr.File) -> gr.File:
    """``component`` taking uploads only: a URL in a request is refused, not fetched (Gradio
    would otherwise download it on the server). Set on the instance: a subclass of a Gradio
    component makes Gradio write a ``.pyi`` stub beside this file at import."""
    move = component.async_move_resource_to_block_cache

    async def refuse_urls(url_or_file_path: Any) -> str | None:
        if url_or_file_path is not None and str(url_or_file_path).startswith(("http:", "https:")):
            raise gr.Error("Scans are uploaded, not fetched from a URL.", print_exception=False)
        return await move(url_or_file_path)

    component.async_move_resource_to_block_cache = refuse_urls
    return component


def _n_volumes(path: str | Path) -> int:
    """How many volumes a NIfTI holds along its 4th axis (1 for anything else)."""
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        return 1
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception:  # noqa: BLE001 - load_scan reports it properly
        return 1
    return int(shape[3]) if len(shape) == 4 else 1


def _table(facts: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items() if k != "channels")
    return "| scan | |\n|---|---|\n" + rows


def build_app(
    model_path: str | os.PathLike | None = None,
    timeout: float = TIMEOUT_S,
    workdir: str | os.PathLike | None = None,
) -> gr.Blocks:
    """The demo as a ``gr.Blocks`` (launch it with :func:`main` for the safe defaults).

    Args:
        model_path: A checkpoint folder; default a tiny random Qwen2.5-VL (answers are noise).
        timeout: Seconds one generation may run before it stops.
        workdir: Where the examples and each visitor's uploads go (a ``session-*`` folder per
            visitor, deleted when their page closes); default a new temporary folder.
    """
    untrained = model_path is None
    path = model_path or build_tiny_model("qwen2_5_vl", "small")
    # A checkpoint trained with a box head keeps its own; any other model gets a fresh one.
    has_heads = (Path(path) / HEADS_NAME).is_file()
    model = MedVLM.from_pretrained(path, heads=None if has_heads else ["box"])
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="medvl-demo-"))
    examples = _examples(root / "examples")
    generate = {"max_new_tokens": 256, "max_time": timeout}

    def readable(error: Exception) -> gr.Error:
        return gr.Error(f"This scan cannot be shown: {error}", print_exception=False)

    def folder(request: gr.Request) -> Path:
        # Named from the session, so the page's unload finds it without the session's state.
        return root / f"session-{hashlib.sha256(request.session_hash.encode()).hexdigest()[:16]}"

    def fresh(session: DemoSession | None, request: gr.Request) -> DemoSession:
        if session is not None:
            session.close()
        return DemoSession(model, folder(request))

    def forget(request: gr.Request) -> None:
        shutil.rmtree(folder(request), ignore_errors=True)

    def load_upload(files, session, request: gr.Request):
        session = fresh(session, request)
        uploads = files if isinstance(files, list) else [files]
        try:
            target = gather_upload(uploads, session.workdir)
        except (ScanError, OSError) as e:
            raise readable(e) from e
        finally:
            for upload in uploads:  # our copy stays until the session ends
                Path(upload).unlink(missing_ok=True)
        return show_scan(session, target, [], 0)

    def load_example(example, session, request: gr.Request):
        if example not in examples:
            raise gr.Error("Pick an example from the list.", print_exception=False)
        return show_scan(fresh(session, request), *examples[example], 0)

    def pick_volume(volume, session):
        if session is None or session.source is None:
            raise gr.Error("Load a scan first.", print_exception=False)
        return show_scan(session, session.source, session.truth, volume)

    def show_scan(session, target, truth, volume):
        n_volumes = _n_volumes(target)
        pick = None if n_volumes == 1 else min(int(volume or 0), n_volumes - 1)
        try:
            facts = session.load(target, volume=pick, truth=truth)
        except (ScanError, ValueError, OSError) as e:  # the message names the problem
            raise readable(e) from e
        logger.info("demo: loaded a %s scan of shape %s", facts["kind"], facts["shape"])
        n = session.n_slices("axial")
        windows = session.window_choices()
        picture = session.picture()
        volumes = gr.update(visible=n_volumes > 1, choices=list(range(n_volumes)), value=pick or 0)
        return (
            session, _table(facts), volumes,
            gr.update(visible=session.is_3d, value="axial"),
            gr.update(visible=session.is_3d, minimum=0, maximum=max(1, n - 1), value=picture.index),
            gr.update(choices=windows, value=windows[0]),
            picture.image, "", "", "", "",
        )  # fmt: skip

    def draw(session, plane, index, window, centre, width, smooth, truth):
        if session is None or session.scan is None:
            return None
        try:
            return session.picture(plane, index, window, centre, width, smooth, truth).image
        except ValueError as e:  # a manual window without a width, say
            raise gr.Error(str(e), print_exception=False) from e

    def change_plane(session, plane, window, centre, width, smooth, truth):
        if session is None or session.scan is None:
            return gr.update(), None
        n = session.n_slices(plane)
        picture = session.picture(plane, None, window, centre, width, smooth, truth)
        return gr.update(maximum=max(1, n - 1), value=picture.index), picture.image

    def show_answer(session, plane, window, centre, width, smooth, truth, options):
        answer = session.last
        index = session.box_slice(plane)
        picture = session.picture(plane, index, window, centre, width, smooth, truth)
        box, status = "", []
        if answer.box is not None:
            box = "[" + ", ".join(f"{v:.3f}" for v in answer.box) + "]"
            span = picture.box_slices[-1]
            if span is not None:
                box += f"  · {plane} slices {span[0]}-{span[1]} of {picture.n_slices}"
            status.append(f"box from the {answer.box_source}")
        iou = session.iou()
        if iou is not None:
            status.append(f"IoU with the known lesion (green): **{iou:.2f}**")
        text = against_options(answer.answer, options)
        slider = gr.update(value=picture.index) if session.is_3d else gr.update()
        return answer.reasoning or "", text, box, " · ".join(status), picture.image, slider

    def ask(session, question, answer_type, *rest):
        view, options = rest[:6], list(rest[6:])
        if session is None or session.scan is None:
            raise gr.Error("Load a scan first.", print_exception=False)
        try:
            session.ask(question, answer_type, options, **generate)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e
        return show_answer(session, *view, options)

    def stream(session, question, answer_type, *rest):
        view, options = rest[:6], list(rest[6:])
        if session is None or session.scan is None:
            raise gr.Error("Load a scan first.", print_exception=False)
        try:
            replies = session.stream(question, answer_type, options, **generate)
            for reply in replies:
                yield reply, "…", "", "", gr.update(), gr.update()
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e
        yield show_answer(session, *view, options)

    def go_to_box(session, plane, window, centre, width, smooth, truth):
        index = None if session is None else session.box_slice(plane)
        if index is None:
            raise gr.Error("No 3D box to go to: ask a grounding question first.",
                           print_exception=False)  # fmt: skip
        picture = session.picture(plane, index, window, centre, width, smooth, truth)
        return gr.update(value=index), picture.image

    def manual(window):
        return gr.update(visible=window == MANUAL), gr.update(visible=window == MANUAL)

    with gr.Blocks(title="medvl demo", delete_cache=(900, 3600)) as app:
        session = gr.State(None, delete_callback=lambda s: s.close() if s else None)
        gr.Markdown("# medvl demo\nUpload a scan — a DICOM file, a DICOM series (its files "
                    "together, or a .zip), NIfTI, PNG/JPG — or pick an example.")  # fmt: skip
        if untrained:
            gr.Markdown("**No model given: a tiny untrained model answers, so its answers are "
                        "noise.** `make quickstart` trains one and prints the `medvl demo --model "
                        "…` command that opens it here.", elem_id="untrained")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Scan", type="filepath", file_count="multiple")
                _uploads_only(upload)
                example = gr.Dropdown(choices=list(examples), label="Example", value=None)
                volume = gr.Dropdown(choices=[0], value=0, label="Volume (4D NIfTI)",
                                     visible=False)  # fmt: skip
                facts = gr.Markdown(elem_id="scan-facts")
                question = gr.Textbox(label="Question", value="Where is the lesion?")
                answer_type = gr.Dropdown(choices=list(ANSWER_TYPES), value="auto",
                                          label="Answer type")  # fmt: skip
                with gr.Accordion("Options (choice questions)", open=False):
                    options = [gr.Textbox(label=chr(65 + i), max_lines=1) for i in range(N_OPTIONS)]
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary")
                    stream_button = gr.Button("Stream reply")
            with gr.Column(scale=3):
                plane = gr.Radio(list(PLANES), value="axial", label="Plane", visible=False)
                index = gr.Slider(0, 1, value=0, step=1, label="Slice", visible=False)
                image = gr.Image(label="Scan", type="pil", elem_id="slice-view", format="png")
                with gr.Row():
                    window = gr.Dropdown(choices=[], label="Window", allow_custom_value=True)
                    centre = gr.Number(label="Centre", value=40, visible=False)
                    width = gr.Number(label="Width", value=400, visible=False)
                with gr.Row():
                    smooth = gr.Checkbox(label="Smooth enlargement", value=False)
                    truth = gr.Checkbox(label="Show known lesions (green)", value=True)
                    goto = gr.Button("Go to box", size="sm")
                reasoning = gr.Textbox(label="Reasoning", lines=4, max_lines=12)
                answer = gr.Textbox(label="Answer", max_lines=6)
                box = gr.Textbox(label="Box (normalised scan coordinates)")
                status = gr.Markdown(elem_id="answer-status")

        view = [plane, window, centre, width, smooth, truth]
        loaded = [session, facts, volume, plane, index, window, image, reasoning, answer, box,
                  status]  # fmt: skip
        upload.upload(load_upload, [upload, session], loaded, api_name="load")
        example.input(load_example, [example, session], loaded, api_name="example")
        volume.input(pick_volume, [volume, session], loaded, api_visibility="private")
        drawing = [session, plane, index, window, centre, width, smooth, truth]
        for control in (index, centre, width, smooth, truth):
            control.input(draw, drawing, image, trigger_mode="always_last",
                          api_visibility="private")  # fmt: skip
        index.release(draw, drawing, image, api_name="slice")
        window.input(manual, window, [centre, width], api_visibility="private").then(
            draw, drawing, image, api_visibility="private"
        )
        plane.input(change_plane, [session, *view], [index, image], api_visibility="private")
        goto.click(go_to_box, [session, *view], [index, image], api_visibility="private")
        answered = [reasoning, answer, box, status, image, index]
        asking = [session, question, answer_type, *view, *options]
        ask_button.click(ask, asking, answered, api_name="ask", concurrency_limit=1,
                         concurrency_id="model")  # fmt: skip
        stream_button.click(stream, asking, answered, api_name="stream", concurrency_limit=1,
                            concurrency_id="model")  # fmt: skip
        app.unload(forget)
    app.queue(max_size=QUEUE_SIZE)
    return app


def main(
    model_path: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_file_size: str | int = MAX_FILE_SIZE,
    timeout: float = TIMEOUT_S,
) -> None:
    """Launch the demo on ``model_path`` (default: ``MEDVL_DEMO_MODEL``, else the tiny model).

    Safe by default: served on 127.0.0.1 only (a warning when ``host`` is not a loopback
    address), no public share link unless ``share``, uploads above ``max_file_size`` refused.
    """
    if not _loopback(host):
        print(f"medvl demo: serving on {host}: anyone who can reach this machine can upload "
              "scans and see answers; use --host 127.0.0.1 for this machine only",
              file=sys.stderr)  # fmt: skip
    app = build_app(model_path or os.environ.get("MEDVL_DEMO_MODEL"), timeout=timeout)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

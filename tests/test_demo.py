"""The Gradio demo: DemoSession's logic, then the real app served on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from medvl.demo_session import BOX_COLOUR, DemoSession, parse_options
from medvl.model import MedVLM
from medvl.scans.phantoms import make_knee_case, write_case
from medvl.scans.views import volume_to_slice

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

APP = Path(__file__).resolve().parents[1] / "demo" / "app.py"


@pytest.fixture(scope="module")
def knee(tmp_path_factory: pytest.TempPathFactory):
    case = make_knee_case(0)
    paths = write_case(case, tmp_path_factory.mktemp("knee"))
    return case, paths["nifti"]


@pytest.fixture(scope="module")
def session(tiny_model_path, knee) -> DemoSession:
    model = MedVLM.from_pretrained(tiny_model_path(), heads=["box"])
    demo = DemoSession(model)
    demo.load(knee[1])
    return demo


def _red(image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB"))
    return np.all(pixels == np.array(BOX_COLOUR, dtype=np.uint8), axis=-1)


def test_parse_options() -> None:
    assert parse_options("") is None
    assert parse_options("A: tear\nB) normal") == {"A": "tear", "B": "normal"}
    assert parse_options("tear; normal") == {"A": "tear", "B": "normal"}


def test_load_and_slice_size(session: DemoSession, knee) -> None:
    info = session.load(knee[1])
    assert info["ndim"] == 3 and info["shape"] == [48, 96, 96] and info["n_slices"] == 96
    image = session.slice_image(10)
    view = volume_to_slice(session.scan, 10, 2, spacing=info["spacing"])
    assert image.size == view.image.size == (96, 96)  # 48 x 1.5 mm = 96 x 0.75 mm
    assert not _red(image).any()


def test_box_overlay_follows_coordinate_map(session: DemoSession, knee) -> None:
    case = knee[0]
    box = next(f.box for f in case.findings if f.box is not None)  # seed 0: the effusion
    inside = session.box_slice(box)
    view = volume_to_slice(session.scan, inside, 2, spacing=session.scan.meta["spacing"])
    x1, y1, x2, y2 = np.array(view.image_box(box)) * np.array(view.image.size * 2)
    red = _red(session.slice_image(inside, box=box))
    rows, cols = np.nonzero(red)
    assert red.sum() > 20
    assert cols.min() >= x1 - 1 and cols.max() <= x2 and rows.min() >= y1 - 1 and rows.max() <= y2
    left, top = round(x1), round(y1)  # the outline's top-left corner is on the box's
    assert red[top, left] and red[top : round(y2), left].all()
    outside = int(box[2] * session.n_slices()) - 5  # below the box's first slice
    assert outside >= 0 and not _red(session.slice_image(outside, box=box)).any()


def test_ask_and_stream(session: DemoSession) -> None:
    reasoning, answer, box, overlay = session.answer(
        "Where is the effusion?", "grounding", "", max_new_tokens=4
    )
    assert isinstance(reasoning, str) and isinstance(answer, str)
    assert box is not None and len(box) == 6 and overlay.size == (96, 96)
    assert _red(overlay).any()  # drawn on the box's middle slice
    texts = list(session.stream_answer("Which?", "choice", "A: tear\nB: normal", max_new_tokens=4))
    assert texts and all(isinstance(t, str) for t in texts)


def test_app_served_and_called_with_gradio_client(tiny_model_path, knee) -> None:
    spec = importlib.util.spec_from_file_location("medvl_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.build_app(str(tiny_model_path()))
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(url, verbose=False)
        reasoning, answer, box, image = client.predict(
            gradio_client.handle_file(str(knee[1])), None, 48, "Where is the effusion?",
            "grounding", "", api_name="/ask",
        )  # fmt: skip
        assert isinstance(reasoning, str) and isinstance(answer, str) and box.startswith("[")
        assert Path(image).is_file() and Path(image).stat().st_size > 0
    finally:
        app.close()


@pytest.fixture(scope="module")
def served(tiny_model_path):
    """The real app on 127.0.0.1 for the module's tests."""
    from medvl.demo_app import build_app

    app = build_app(str(tiny_model_path()))
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield app, url
    app.close()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ct_small", "2D image"), ("mr_small", "2D image"), ("retina", "2D image"),
     ("us_cine", "3D volume, 30 slices")],
)  # fmt: skip
def test_every_2d_example_loads(served, name, kind) -> None:
    """2D scans used to fail in the browser ("Slider minimum must be less than maximum")."""
    from PIL import Image

    from medvl.scans.examples import example_scans

    client = gradio_client.Client(served[1], verbose=False)
    path = example_scans()[name]
    slider, image, facts = client.predict(gradio_client.handle_file(str(path)), None,
                                          api_name="/load")  # fmt: skip
    assert facts.startswith(kind) and str(path.name) not in facts  # no file name shown
    with Image.open(image) as shown:
        assert max(shown.size) >= 256  # enlarged to be readable


def test_a_bad_upload_says_why_and_the_app_keeps_serving(served, tmp_path, knee) -> None:
    client = gradio_client.Client(served[1], verbose=False)
    for name, data in (("notes.txt", b"not a scan"), ("empty.dcm", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(Exception, match="This scan cannot be shown") as err:
            client.predict(gradio_client.handle_file(str(bad)), None, api_name="/load")
        assert name in str(err.value) or "DICOM" in str(err.value) or "format" in str(err.value)
    _, _, facts = client.predict(gradio_client.handle_file(str(knee[1])), None, api_name="/load")
    assert facts.startswith("3D volume, 96 slices")


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_2d_and_a_3d_scan_in_a_real_browser(served, knee, tmp_path) -> None:
    """Headless Chromium: upload a 2D scan and a 3D volume, ask, and look at the screen."""
    sync_api = pytest.importorskip("playwright.sync_api")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium: .ci/run installs it (apt-get install -y chromium)")
    from medvl.scans.examples import example_scans

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]  # fmt: skip
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(served[1])
        upload = page.locator("input[type=file]").first
        upload.set_input_files(str(example_scans()["ct_small"]))
        facts = page.get_by_label("Scan info")
        sync_api.expect(facts).to_have_value(re.compile("^2D image"), timeout=30000)
        page.screenshot(path=str(tmp_path / "demo_2d.png"), full_page=True)
        assert page.locator("text=Error").count() == 0
        shown = page.locator("#slice-view img").first
        assert shown.evaluate("img => img.naturalWidth") >= 256
        page.goto(served[1])  # a filled File component has no file input left: start afresh
        page.locator("input[type=file]").first.set_input_files(str(knee[1]))
        sync_api.expect(facts).to_have_value(re.compile("^3D volume"), timeout=30000)
        page.get_by_label("Answer type").click()
        page.get_by_role("option", name="grounding").click()
        page.get_by_role("button", name="Ask", exact=True).click()
        box = page.get_by_label("Box (normalised scan coordinates)")
        sync_api.expect(box).to_have_value(re.compile(r"^\["), timeout=60000)
        page.screenshot(path=str(tmp_path / "demo_3d.png"), full_page=True)
        assert page.locator("text=Error").count() == 0
        browser.close()
    print("screenshots:", tmp_path / "demo_2d.png", tmp_path / "demo_3d.png")

"""The real Gradio app served on 127.0.0.1: called with gradio_client, and in headless Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from medvl.scans.examples import example_scans

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

APP = Path(__file__).resolve().parents[2] / "demo" / "app.py"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def served(tiny_model_path, workdir):
    """The app as ``python demo/app.py`` builds it, on 127.0.0.1, uploads capped at 5 MB."""
    spec = importlib.util.spec_from_file_location("medvl_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.build_app(str(tiny_model_path()), workdir=workdir)
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                           max_file_size="5mb")  # fmt: skip
    yield url
    app.close()


def _client(url: str):
    return gradio_client.Client(url, verbose=False)


def _upload(client, *paths):
    return client.predict([gradio_client.handle_file(str(p)) for p in paths], api_name="/load")


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ct_small", "2D image"), ("mr_small", "2D image"), ("retina", "2D image"),
     ("us_cine", "3D volume, 30 frames"), ("anatomical", "3D volume, 25 axial slices")],
)  # fmt: skip
def test_every_example_uploads_and_shows(served, name, kind) -> None:
    """2D scans used to fail in the browser ("Slider minimum must be less than maximum")."""
    path = example_scans()[name]
    facts, *_, image, reasoning, answer, box, status = _upload(_client(served), path)
    assert (
        f"| kind | {kind} |" in facts and path.name not in facts and str(path.parent) not in facts
    )
    with Image.open(image) as shown:
        assert max(shown.size) == 560  # enlarged (or shrunk) to the screen's size


def test_a_4d_nifti_offers_its_volumes(served) -> None:
    client = _client(served)
    facts, volumes, *_ = client.predict("example4d", api_name="/example")
    assert "| kind | 3D volume, 24 axial slices |" in facts
    assert volumes["visible"] and [c[1] for c in volumes["choices"]] == [0, 1]


def test_bad_uploads_say_why_and_the_app_keeps_serving(served, tmp_path, knee) -> None:
    client = _client(served)
    cases = {"notes.txt": b"not a scan", "empty.dcm": b"", "broken.zip": b"PK\3\4 no",
             "PATIENT_NAME.dcm": b"\0" * 200}  # fmt: skip
    for name, data in cases.items():
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(Exception, match="This scan cannot be shown") as err:
            _upload(client, bad)
        assert "PATIENT_NAME" not in str(err.value)  # uploads are renamed before loading
    big = tmp_path / "big.nii"
    big.write_bytes(b"\0" * (6 * 1024 * 1024))
    with pytest.raises(Exception, match="(?i)file size|too large|exceed"):
        _upload(client, big)
    facts, *_ = _upload(client, knee[1])
    assert "96 axial slices" in facts


def test_a_url_in_place_of_an_upload_is_not_fetched(served) -> None:
    """The server downloads nothing: a request naming a URL for the scan is refused."""
    import json
    import urllib.request

    data = {"path": "https://example.com/scan.dcm", "meta": {"_type": "gradio.FileData"}}
    call = urllib.request.Request(served + "gradio_api/call/load",
                                  data=json.dumps({"data": [[data]]}).encode(),
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(call, timeout=30) as response:
        event = json.load(response)["event_id"]
    with urllib.request.urlopen(served + f"gradio_api/call/load/{event}", timeout=60) as response:
        stream = response.read().decode()
    assert "event: error" in stream and "Scans are uploaded, not fetched from a URL." in stream


def test_a_dicom_series_uploads_as_its_files(served, knee) -> None:
    series = sorted(p for p in knee[2].iterdir() if p.is_file())
    facts, *_ = _upload(_client(served), *series)
    assert "| kind | 3D volume, 96 axial slices |" in facts and "dicom-series" in facts


def test_each_visitor_has_their_own_scan(served, knee) -> None:
    """Two visitors (two client sessions): the first's slices stay the knee's after the
    second loads a 2D CT."""
    first, second = _client(served), _client(served)
    _upload(first, knee[1])
    _upload(second, example_scans()["ct_small"])
    image = first.predict("coronal", 10, "full range", 0, 1, False, True, api_name="/slice")
    with Image.open(image) as shown:
        assert shown.size == (560, 560)  # coronal knee: 72 x 72 mm
    with pytest.raises(Exception, match="Load a scan first"):
        _client(served).predict("Where?", "grounding", "axial", "full range", 0, 1, False, True,
                                "", "", "", "", "", api_name="/ask")  # fmt: skip


def test_ask_on_the_knee_phantom_names_the_box_slices_and_iou(served) -> None:
    client = _client(served)
    client.predict("knee phantom (MRI volume)", api_name="/example")
    reasoning, answer, box, status, image, index = client.predict(
        "Where is the effusion?", "grounding", "axial", "0.5-99.5 %", 0, 1, False, True,
        "", "", "", "", "", api_name="/ask",
    )  # fmt: skip
    assert re.match(r"^\[[0-9., ]+\]  · axial slices \d+-\d+ of 96$", box)
    first, last = (int(v) for v in re.search(r"slices (\d+)-(\d+)", box).groups())
    assert first <= index["value"] <= last and "IoU with the known lesion" in status
    assert isinstance(reasoning, str) and isinstance(answer, str)


def test_medvl_demo_warns_when_served_beyond_this_machine(tiny_model_path) -> None:
    """The real command, on all interfaces: it says so on stderr, then serves."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "medvl.cli", "demo", "--model", str(tiny_model_path()),
               "--host", "0.0.0.0", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(1)
        else:
            pytest.fail("medvl demo did not start serving within 120 s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "serving on 0.0.0.0: anyone who can reach this machine" in err


def test_concurrent_questions_queue_for_the_one_model(served) -> None:
    """Four visitors ask at once: the model answers one at a time, each visitor is told their
    place in the queue, and every answer comes back."""
    import time

    jobs = []
    for _ in range(4):
        client = _client(served)
        client.predict("chest phantom (X-ray)", api_name="/example")
        jobs.append(client.submit("Where is the nodule?", "grounding", "axial", "0.5-99.5 %", 0,
                                  1, False, True, "", "", "", "", "", api_name="/ask"))  # fmt: skip
    ranks: set[int] = set()
    while not all(job.done() for job in jobs):
        ranks |= {s.rank for s in (job.status() for job in jobs) if s.rank is not None}
        time.sleep(0.05)
    results = [job.result() for job in jobs]
    assert all(r[2].startswith("[") and "IoU" in r[3] for r in results), [r[2:4] for r in results]
    assert max(ranks) >= 1  # somebody waited behind somebody else, and was told so


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _sessions(workdir: Path) -> set[Path]:
    return {p for p in workdir.glob("session-*") if any(f.is_file() for f in p.rglob("*"))}


def test_a_2d_and_a_3d_scan_in_a_real_browser(served, knee, tmp_path, workdir) -> None:
    """Headless Chromium: a 2D CT, then the knee phantom: planes, typed slice, ask, go to box."""
    sync_api = pytest.importorskip("playwright.sync_api")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium: .ci/run installs it (apt-get install -y chromium)")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]  # fmt: skip
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(served)
        page.locator("input[type=file]").first.set_input_files(str(example_scans()["ct_small"]))
        facts = page.locator("#scan-facts")
        expect(facts).to_contain_text("2D image", timeout=30000)
        shown = page.locator("#slice-view img").first
        expect(shown).to_have_js_property("naturalWidth", 560, timeout=30000)
        page.screenshot(path=str(tmp_path / "demo_2d.png"), full_page=True)
        assert page.locator(".toast-body").count() == 0  # no error popped up
        sessions_before = _sessions(workdir)
        page.get_by_label("Example").click()
        page.get_by_role("option", name="knee phantom (MRI volume)").click()
        expect(facts).to_contain_text("96 axial slices", timeout=30000)
        before = shown.get_attribute("src")
        number = page.get_by_label("number input for Slice")
        number.fill("20")
        number.press("Enter")
        expect(shown).not_to_have_attribute("src", before, timeout=30000)
        page.get_by_label("coronal").check()
        expect(page.get_by_label("number input for Slice")).to_have_value("48", timeout=30000)
        page.get_by_label("Answer type").click()
        page.get_by_role("option", name="grounding").click()
        page.get_by_role("button", name="Ask", exact=True).click()
        box = page.get_by_label("Box (normalised scan coordinates)")
        expect(box).to_have_value(re.compile(r"coronal slices \d+-\d+ of 96"), timeout=60000)
        expect(page.locator("#answer-status")).to_contain_text("IoU", timeout=30000)
        page.screenshot(path=str(tmp_path / "demo_3d.png"), full_page=True)
        first, last = (int(v) for v in re.search(r"slices (\d+)-(\d+)", box.input_value()).groups())
        slice_number = page.get_by_label("number input for Slice")
        slice_number.fill("0")
        slice_number.press("Enter")
        page.get_by_role("button", name="Go to box").click()
        expect(slice_number).to_have_value(str((first + last) // 2), timeout=30000)
        page.get_by_role("button", name="Stream reply").click()
        expect(box).to_have_value("", timeout=30000)  # the old answer is cleared first
        expect(box).to_have_value(re.compile(r"coronal slices \d+-\d+ of 96"), timeout=60000)
        assert page.locator(".toast-body").count() == 0
        other = browser.new_page()  # a second visitor uploads, then closes their page
        other.goto(served)
        other.locator("input[type=file]").first.set_input_files(str(knee[1]))
        expect(other.locator("#scan-facts")).to_contain_text("96 axial slices", timeout=30000)
        (theirs,) = _sessions(workdir) - sessions_before
        other.close()
        for _ in range(60):  # the page's unload deletes the visitor's files
            if not theirs.exists():
                break
            time.sleep(0.5)
        assert not theirs.exists()
        browser.close()
    print("screenshots:", tmp_path / "demo_2d.png", tmp_path / "demo_3d.png")

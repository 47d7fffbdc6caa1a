"""One visitor's session: load, draw, ask, stream, score against a phantom's known lesions."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.demo.session import (
    PREDICTION_COLOUR,
    TRUTH_COLOUR,
    DemoSession,
    against_options,
    parse_options,
    truth_overlays,
)
from medvl.eval.metrics import box_iou
from medvl.scans import ScanError


def _is(image, colour) -> np.ndarray:
    return np.all(np.asarray(image.convert("RGB")) == np.array(colour, np.uint8), axis=-1)


@pytest.fixture
def session(boxed_model, knee, tmp_path) -> DemoSession:
    demo = DemoSession(boxed_model, tmp_path / "session")
    demo.load(knee[1], truth=truth_overlays(knee[0]))
    return demo


def test_parse_options_from_text_or_fields() -> None:
    assert parse_options("") is None and parse_options(["", " "]) is None
    assert parse_options("A: tear\nB) normal") == {"A": "tear", "B": "normal"}
    assert parse_options("tear; normal") == {"A": "tear", "B": "normal"}
    assert parse_options(["tear", "", "normal"]) == {"A": "tear", "B": "normal"}


def test_the_answer_is_shown_against_the_options() -> None:
    options = ["meniscal tear", "", "effusion"]
    assert against_options("B", options) == "B: effusion"
    assert against_options("The answer is (A).", options) == "A: meniscal tear"
    assert against_options("A or B", options) == "A or B"  # a hedge picks nothing
    assert against_options("effusion", None) == "effusion"
    assert against_options(None, options) == "(no answer in the reply)"


def test_facts_name_no_file(session: DemoSession, knee) -> None:
    facts = session.facts()
    assert facts["kind"] == "3D volume, 96 axial slices" and facts["shape"] == "48 × 96 × 96 voxels"
    assert facts["spacing"] == "1.5 × 0.75 × 0.75 mm" and facts["orientation"].startswith("RAS")
    assert not any(knee[1].name in str(v) or str(knee[1].parent) in str(v) for v in facts.values())


def test_the_known_lesion_is_drawn_in_green(session: DemoSession) -> None:
    assert len(session.truth[0].box) == 6
    first, last = session.picture("axial", 0).box_slices[0]
    middle = (first + last) // 2
    assert _is(session.picture("axial", middle).image, TRUTH_COLOUR).sum() > 20
    assert not _is(session.picture("axial", middle, show_truth=False).image, TRUTH_COLOUR).any()


def test_ask_draws_the_answer_and_scores_it(session: DemoSession) -> None:
    answer = session.ask("Where is the effusion?", "grounding", max_new_tokens=4)
    assert answer.box is not None and len(answer.box) == 6 and answer.box_source == "head"
    index = session.box_slice("axial")
    picture = session.picture("axial", index)
    assert picture.box_slices[-1][0] <= index <= picture.box_slices[-1][1]
    assert _is(picture.image, PREDICTION_COLOUR).sum() > 20
    assert session.iou() == pytest.approx(max(box_iou(answer.box, o.box) for o in session.truth))
    assert not _is(
        session.picture("axial", index, show_answer=False).image, PREDICTION_COLOUR
    ).any()


def test_stream_grows_then_reads_the_same_answer_as_ask(session: DemoSession) -> None:
    asked = session.ask("Where is the effusion?", "grounding", max_new_tokens=6)
    texts = list(session.stream("Where is the effusion?", "grounding", max_new_tokens=6))
    assert texts and all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == asked.raw and session.last.box == pytest.approx(asked.box, abs=1e-5)


def test_a_generation_stops_at_its_time_limit(session: DemoSession) -> None:
    """The app passes its --timeout as max_time: a reply is cut there, not left running."""
    full = session.ask("Describe the scan.", "open", max_new_tokens=64)
    cut = session.ask("Describe the scan.", "open", max_new_tokens=64, max_time=1e-9)
    count = len(session.model.tokenizer(full.raw).input_ids)
    assert count > 8 and len(session.model.tokenizer(cut.raw).input_ids) <= 2


def test_questions_that_cannot_be_asked_say_why(session: DemoSession) -> None:
    with pytest.raises(ValueError, match="type a question"):
        session.ask("  ", "open")
    with pytest.raises(ValueError, match="needs its options"):
        session.ask("Which grade?", "choice", ["", ""])
    assert session.question("Which?", "choice", ["tear", "normal"]).options == {
        "A": "tear",
        "B": "normal",
    }


def test_a_bad_file_and_close(boxed_model, tmp_path) -> None:
    demo = DemoSession(boxed_model, tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    bad = tmp_path / "mine" / "scan.dcm"
    bad.write_bytes(b"nope")
    with pytest.raises(ScanError, match="scan.dcm"):
        demo.load(bad)
    with pytest.raises(ValueError, match="no scan loaded"):
        demo.picture()
    demo.close()
    assert not (tmp_path / "mine").exists()

"""load_scan against a corpus of unusual and broken inputs (tests/scans/hostile_corpus.py):
each loads as stated or fails with a ScanError that says why; nothing hangs or escapes, and
files that claim huge sizes cost no memory to refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

CORPUS = Path(__file__).with_name("hostile_corpus.py")
sys.path.insert(0, str(CORPUS.parent))
import hostile_corpus  # noqa: E402 - the corpus lives beside this test


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[dict, dict]:
    """(cases, outcomes): every case loaded in one child process, each under an alarm."""
    folder = tmp_path_factory.mktemp("hostile")
    cases = hostile_corpus.build(folder / "inputs")
    spec = {name: {"path": c.path, "kwargs": c.kwargs} for name, c in cases.items()}
    (folder / "cases.json").write_text(json.dumps(spec))
    command = [sys.executable, str(CORPUS), str(folder / "cases.json"), str(folder / "out.json")]
    subprocess.run(command, check=True, timeout=600)  # each case has its own 20 s alarm
    return cases, json.loads((folder / "out.json").read_text())


def _verdict(case: hostile_corpus.Case, outcome: dict) -> str | None:
    """None when the outcome is the expected one, else what went wrong."""
    if case.shape is not None:
        if "shape" not in outcome:
            return f"expected shape {case.shape}, got {outcome['error']}: {outcome['message']}"
        if tuple(outcome["shape"]) != case.shape:
            return f"expected shape {case.shape}, got {tuple(outcome['shape'])}"
        if case.spacing and outcome["spacing"] != pytest.approx(case.spacing, rel=1e-5):
            return f"expected spacing {case.spacing}, got {outcome['spacing']}"
        return None
    if outcome.get("error") != "ScanError":
        return f"expected a ScanError, got {outcome}"
    missing = [w for w in case.error if w not in outcome["message"]]
    return f"message lacks {missing}: {outcome['message']}" if missing else None


def test_every_input_loads_as_stated_or_fails_clearly(corpus) -> None:
    cases, outcomes = corpus
    assert len(cases) >= 60 and set(outcomes) == set(cases)
    wrong = {name: _verdict(c, outcomes[name]) for name, c in cases.items()}
    wrong = {name: why for name, why in wrong.items() if why}
    assert not wrong, "\n".join(f"{name}: {why}" for name, why in wrong.items())
    counts = Counter("loads" if c.shape else "ScanError" for c in cases.values())
    print(f"{len(cases)} inputs: {dict(counts)}")


def test_every_error_names_its_file(corpus) -> None:
    cases, outcomes = corpus
    for name, case in cases.items():
        if case.error and case.path:
            assert Path(case.path).name in outcomes[name]["message"], name


@pytest.mark.parametrize(
    "name", ["nifti_claims_8gib", "nifti_gz_claims_8gib", "png_100_megapixels"]
)
def test_a_file_claiming_a_huge_size_costs_no_memory_to_refuse(corpus, name) -> None:
    command = [sys.executable, str(CORPUS), "--peak", corpus[0][name].path]
    growth = float(subprocess.run(command, check=True, timeout=300, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1])  # fmt: skip
    assert growth < 100, f"{name}: peak memory grew by {growth:.0f} MB"


def test_a_series_skips_an_unreadable_member_only_when_asked_and_says_so(corpus) -> None:
    from medvl.scans import ScanError, load_scan

    folder = corpus[0]["series_truncated_member"].path
    with pytest.raises(ScanError, match="IM0003"):
        load_scan(folder)
    scan = load_scan(folder, skip_unreadable=True)
    assert scan.shape[-1] == 4 and scan.meta["skipped"] == ("IM0003",)
    assert load_scan(corpus[0]["series"].path).meta["skipped"] == ()
    with pytest.raises(ScanError, match="only applies to a DICOM series folder"):
        load_scan(corpus[0]["ct_small"].path, skip_unreadable=True)


def test_unphysical_pixel_spacing_is_a_warning_that_names_the_fallback(corpus, caplog) -> None:
    from medvl.scans import load_scan

    for name in ("pixel_spacing_inf", "pixel_spacing_zero", "pixel_spacing_nan"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="medvl.scans.dicom"):
            scan = load_scan(corpus[0][name].path)
        assert scan.meta["spacing"] == (1.0, 1.0)
        assert any("PixelSpacing" in r.getMessage() and "using 1.0 x 1.0 mm" in r.getMessage()
                   for r in caplog.records), name  # fmt: skip

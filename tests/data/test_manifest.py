"""JSONL manifests: errors with line and field, file checks, atomic writes, datasets export."""

import json
import os
import stat

import datasets
import pytest

from medvl.data import (
    ManifestError,
    Sample,
    iter_manifest,
    manifest_to_dataset,
    read_manifest,
    row_to_sample,
    validate_manifest,
    write_manifest,
)
from medvl.data.manifest import dataset_features

GOOD = {
    "id": "ok",
    "image": "xray.png",
    "question": "Is there a pneumothorax?",
    "answer": "no",
    "answer_type": "closed",
}
DROP = object()  # marks a key to remove from the record


def write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def record(**changes):
    out = {**GOOD, "id": "bad"}
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


CHOICE = {"answer_type": "choice", "options": {"A": "left", "B": "right"}, "answer": "A"}
BAD_RECORDS = {
    "missing id": (record(id=DROP), "id", "got nothing (key missing)"),
    "id not a string": (record(id=7), "id", "expected a non-empty string, got 7"),
    "missing image": (record(image=DROP), "image", "expected a path or a non-empty list"),
    "image empty list": (record(image=[]), "image", "got []"),
    "image list with a number": (record(image=["a.png", 3]), "image", 'got ["a.png", 3]'),
    "empty question": (record(question=""), "question", 'expected a non-empty string, got ""'),
    "blank question": (record(question="  "), "question", "expected a non-empty string"),
    "missing answer": (record(answer=DROP), "answer", "got nothing"),
    "bad answer_type": (record(answer_type="yesno"), "answer_type", "expected one of choice"),
    "choice answer not an option": (
        record(**{**CHOICE, "answer": "C"}),
        "answer",
        'expected one of the option letters A, B, got "C"',
    ),
    "choice without options": (record(**{**CHOICE, "options": DROP}), "options", "got nothing"),
    "options lowercase letters": (
        record(**{**CHOICE, "options": {"a": "x", "b": "y"}}),
        "options",
        'expected letters A, B (one uppercase letter each, from A with no gaps), got ["a", "b"]',
    ),
    "options with a gap": (record(**{**CHOICE, "options": {"A": "x", "C": "y"}}), "options", "C"),
    "options two-letter key": (record(**{**CHOICE, "options": {"AB": "x"}}), "options", "AB"),
    "options empty text": (record(**{**CHOICE, "options": {"A": ""}}), "options", "option A"),
    "options not an object": (record(**{**CHOICE, "options": ["x", "y"]}), "options", "object"),
    "closed maybe": (record(answer="maybe"), "answer", '"yes" or "no" for a closed question'),
    "box too short": (
        record(box=[0.1, 0.2]),
        "box",
        "expected 4 or 6 numbers in [0, 1], got [0.1, 0.2]",
    ),
    "box of five": (record(box=[0, 0, 1, 1, 1]), "box", "4 or 6 numbers"),
    "box above 1": (record(box=[0, 0, 1.5, 1]), "box", "in [0, 1]"),
    "box below 0": (record(box=[-0.1, 0, 1, 1]), "box", "in [0, 1]"),
    "box x1 > x2": (record(box=[0.6, 0.1, 0.4, 0.9]), "box", "[x1, y1, x2, y2] with each min"),
    "box z1 > z2": (record(box=[0, 0, 0.7, 1, 1, 0.2]), "box", "[x1, y1, z1, x2, y2, z2]"),
    "box NaN": (record(box=[float("nan"), 0, 1, 1]), "box", "got [NaN, 0, 1, 1]"),
    "box Infinity": (record(box=[0, 0, float("inf"), 1]), "box", "in [0, 1]"),
    "box strings": (record(box=["0", "0", "1", "1"]), "box", "4 or 6 numbers"),
    "box booleans": (record(box=[False, False, True, True]), "box", "4 or 6 numbers"),
    "box not a list": (record(box="0,0,1,1"), "box", '"0,0,1,1"'),
    "grounding without box": (
        record(answer_type="grounding", answer="the lesion"),
        "box",
        "a box for a grounding question, got nothing",
    ),
    "severity negative": (record(severity=-1), "severity", "expected an integer >= 0, got -1"),
    "severity float": (record(severity=1.5), "severity", "got 1.5"),
    "severity string": (record(severity="2"), "severity", 'got "2"'),
    "severity boolean": (record(severity=True), "severity", "got true"),
    "severity question without severity": (
        record(answer_type="severity", answer="2"),
        "severity",
        "for a severity question",
    ),
    "severity answer disagrees": (
        record(answer_type="severity", severity=2, answer="3"),
        "answer",
        'expected "2" (the severity field, as a string), got "3"',
    ),
    "reasoning a string": (record(reasoning="first look"), "reasoning", "a list of strings"),
    "reasoning with a number": (record(reasoning=["look", 2]), "reasoning", '["look", 2]'),
    "split empty": (record(split=""), "split", "non-empty string"),
    "split a number": (record(split=1), "split", "got 1"),
    "mask empty": (record(mask=""), "mask", "non-empty string"),
    "modality a number": (record(modality=3), "modality", "expected a string, got 3"),
}


@pytest.mark.parametrize(("bad", "field", "fragment"), BAD_RECORDS.values(), ids=BAD_RECORDS)
def test_bad_record_names_line_and_field(tmp_path, bad, field, fragment):
    # Line 2 is blank: it is skipped but still counted, as an editor counts it.
    path = write_lines(tmp_path / "data.jsonl", json.dumps(GOOD), "  ", json.dumps(bad))
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    e = info.value
    assert (e.path, e.line, e.field) == (str(path), 3, field)
    assert str(e).startswith(f"{path}:3: field '{field}': expected ")
    assert fragment in str(e)


def test_the_error_message_reads_as_documented(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", json.dumps(record(box=[0.1, 0.2])))
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    expected = f"{path}:1: field 'box': expected 4 or 6 numbers in [0, 1], got [0.1, 0.2]"
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"id": "x", "image": }', "invalid JSON at column 22: Expecting value"),
        ('{"id": "x"', "invalid JSON at column 11: Expecting ',' delimiter"),
        ('["id", "x"]', 'expected a JSON object, got ["id", "x"]'),
        ('{"id": "x", "id": "y"}', "key 'id' appears twice"),
    ],
)
def test_unreadable_line_names_line_and_json_error(tmp_path, line, fragment):
    path = write_lines(tmp_path / "data.jsonl", json.dumps(GOOD), line)
    with pytest.raises(ManifestError, match=f"^{path}:2: ") as info:
        read_manifest(path)
    assert fragment in str(info.value)


def test_non_utf8_line_and_bom(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ManifestError, match=r":2: not UTF-8 text"):
        read_manifest(path)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n")
    assert [s.id for s in read_manifest(path)] == ["ok"]


def test_duplicate_id_names_both_lines(tmp_path):
    other = {**GOOD, "id": "other"}
    path = write_lines(tmp_path / "d.jsonl", *map(json.dumps, [GOOD, other, GOOD]))
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert str(info.value) == (
        f"{path}:3: field 'id': expected an id not used before, got \"ok\" (also on line 1)"
    )


def test_iter_manifest_streams_until_the_bad_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", json.dumps(GOOD), "{oops")
    samples = iter_manifest(path)
    assert next(samples).id == "ok"
    with pytest.raises(ManifestError, match=":2: invalid JSON"):
        next(samples)


def test_check_files(tmp_path):
    (tmp_path / "xray.png").touch()
    (tmp_path / "series").mkdir()  # a DICOM series folder counts as existing
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "s1.png").touch()
    lines = [
        GOOD,
        {**GOOD, "id": "dicom", "image": "series"},
        {**GOOD, "id": "vol", "image": ["scans/s1.png", "scans/s2.png"]},
    ]
    path = write_lines(tmp_path / "d.jsonl", *map(json.dumps, lines))
    assert len(read_manifest(path)) == 3  # files are not checked unless asked
    with pytest.raises(ManifestError) as info:
        read_manifest(path, check_files=True)
    e = info.value
    assert (e.line, e.field) == (3, "image")
    assert f"got {tmp_path / 'scans' / 's2.png'} (does not exist)" in str(e)

    path = write_lines(tmp_path / "m.jsonl", json.dumps({**GOOD, "mask": "masks/m.png"}))
    with pytest.raises(ManifestError, match=r":1: field 'mask': .*masks/m.png \(does not exist\)"):
        read_manifest(path, check_files=True)


def test_write_then_read_preserves_everything(tmp_path):
    samples = [
        Sample.from_dict({**GOOD, "modality": "X-ray", "site": "Paris", "labels": [1, 2]}),
        Sample(
            id="knee-3d",
            image=["knee/001.dcm", "knee/002.dcm"],
            modality="MRI",
            anatomy="knee",
            question="Where is the tear?",
            answer="posterior horn",
            answer_type="grounding",
            box=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            mask="knee/mask.nii.gz",
            reasoning=["find the meniscus", "look for signal"],
            split="test",
            source="3DReasonKnee",
            meta={"kl_grade": None, "注释": "半月板"},
        ),
        Sample(
            id="fundus",
            image="eye.jpg",
            question="Grade?",
            answer="3",
            answer_type="severity",
            severity=3,
            options={"A": "none", "B": "mild"},
        ),
    ]
    path = write_manifest(tmp_path / "sub" / "out.jsonl", samples)
    assert read_manifest(path) == samples
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["site"] == "Paris" and "meta" not in first  # extra keys are written flat
    assert "半月板" in path.read_text(encoding="utf-8")  # kept readable, not \u-escaped


def test_write_accepts_records(tmp_path):
    path = write_manifest(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "2", "answer": "YES"}])
    assert [s.answer for s in read_manifest(path)] == ["no", "yes"]


def test_write_is_atomic_and_leaves_old_file_on_failure(tmp_path):
    path = write_manifest(tmp_path / "d.jsonl", [GOOD])
    before = path.read_bytes()
    edited = Sample.from_dict({**GOOD, "id": "edited"})
    edited.answer = "maybe"  # edited after construction: caught on write
    cases = [
        ([GOOD, GOOD], ":2: field 'id': expected an id not used before"),
        ([GOOD, edited], ":2: field 'answer'"),
        ([Sample.from_dict({**GOOD, "x": float("nan")})], ":1: cannot write as JSON"),
    ]
    for samples, message in cases:
        with pytest.raises(ManifestError, match=message):
            write_manifest(path, samples)
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["d.jsonl"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_validate_manifest_collects_every_error(tmp_path):
    (tmp_path / "xray.png").touch()
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "id": "v", "modality": "MRI", "split": "test"}),
        "",
        "{not json",
        # Three errors on one line: the file is still checked when other fields are broken.
        json.dumps(record(question="", box=[0.1, 0.2], image="gone.png")),
        json.dumps({**GOOD, "image": "missing.png"}),  # duplicate id and a missing file
        json.dumps(record(id="c", **CHOICE)),
    ]
    path = write_lines(tmp_path / "d.jsonl", *lines)
    report = validate_manifest(path)
    assert not report.ok
    assert (report.records, report.bad_records) == (6, 3)
    assert [(e.line, e.field) for e in report.errors] == [
        (4, None),
        (5, "question"),
        (5, "box"),
        (5, "image"),
        (6, "id"),
        (6, "image"),
    ]
    # Counts cover the lines that parse as samples (not 4 and 5).
    assert report.counts["answer_type"] == {"closed": 3, "choice": 1}
    assert report.counts["split"] == {"train": 3, "test": 1}
    text = str(report)
    assert text.startswith(f"{path}: 6 records, 3 with errors (6 errors)")
    assert "answer_type: closed 3, choice 1" in text
    assert "modality: (none) 3, MRI 1" in text
    assert f"{path}:6: field 'id': expected an id not used before" in text
    assert "... and 4 more" in report.summary(max_errors=2)
    assert len(validate_manifest(path, check_files=False).errors) == 4  # no file error


def test_validate_manifest_of_a_good_file(tmp_path):
    (tmp_path / "xray.png").touch()
    path = write_lines(tmp_path / "d.jsonl", json.dumps(GOOD))
    report = validate_manifest(path)
    assert report.ok
    assert str(report).splitlines()[0] == f"{path}: 1 records, all valid"


def mixed_samples():
    return [
        Sample.from_dict({**GOOD, "box": [0.1, 0.1, 0.5, 0.5], "site": "A"}),
        Sample(
            id="vol",
            image=["vol/001.png", "vol/002.png"],
            question="Where?",
            answer="here",
            answer_type="grounding",
            box=[0, 0, 0, 1, 1, 1],
            mask="vol/mask.nii.gz",
        ),
        Sample(
            id="mc",
            image="series_dir",
            question="Which knee compartment?",
            options={"A": "medial", "B": "lateral", "C": "patellofemoral"},
            answer="B",
            answer_type="choice",
            reasoning=["look"],
            severity=1,
        ),
    ]


def test_manifest_to_dataset(tmp_path):
    path = write_manifest(tmp_path / "d.jsonl", mixed_samples())
    ds = manifest_to_dataset(path)
    assert isinstance(ds, datasets.Dataset)
    assert ds.num_rows == 3
    assert ds.features == dataset_features()
    assert ds.column_names[:3] == ["id", "image", "images"]
    assert set(ds.column_names) == {
        "id", "image", "images", "modality", "anatomy", "question", "options", "answer",
        "answer_type", "box", "mask", "mask_path", "severity", "reasoning", "split", "source",
        "meta",
    }  # fmt: skip
    assert ds["image"] == [["xray.png"], ["vol/001.png", "vol/002.png"], ["series_dir"]]
    assert ds["images"] == [
        [str(tmp_path / "xray.png")],
        [str(tmp_path / "vol" / "001.png"), str(tmp_path / "vol" / "002.png")],
        [str(tmp_path / "series_dir")],
    ]
    assert ds["box"] == [[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 1, 1, 1], None]
    assert ds["mask_path"] == [None, str(tmp_path / "vol" / "mask.nii.gz"), None]
    assert ds["options"][:2] == [None, None]
    assert json.loads(ds["options"][2]) == {"A": "medial", "B": "lateral", "C": "patellofemoral"}
    assert [json.loads(m) for m in ds["meta"]] == [{"site": "A"}, {}, {}]
    assert ds["severity"] == [None, None, 1]
    assert [row_to_sample(row) for row in ds] == read_manifest(path)


def test_manifest_to_dataset_from_samples_and_fixed_schema(tmp_path):
    no_boxes = [Sample.from_dict(GOOD)]
    ds = manifest_to_dataset(no_boxes, root=tmp_path)
    assert ds["images"] == [[str(tmp_path / "xray.png")]]
    assert ds.features["box"] == dataset_features()["box"]  # not a null column
    both = datasets.concatenate_datasets([ds, manifest_to_dataset(mixed_samples()[1:])])
    assert both.num_rows == 3
    assert manifest_to_dataset([]).num_rows == 0

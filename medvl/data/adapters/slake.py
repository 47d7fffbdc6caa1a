"""SLAKE (Liu et al. 2021): bilingual radiology VQA with organ masks and boxes (Slake1.0)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvl.data.adapters._common import (
    AdapterError,
    ConvertReport,
    check_split,
    extra_meta,
    load_json,
    load_records,
    make_sample,
    missing_layout,
    norm_split,
    progress,
    relpath,
    require_dir,
    text,
    yes_no,
)
from medvl.data.sample import Sample

SOURCE = "SLAKE"
# The original release names the validation file validate.json; the Hugging Face copy
# (BoKelvin/SLAKE) renamed it validation.json.
SPLIT_FILES = {
    "train": ("train.json",),
    "val": ("validate.json", "validation.json"),
    "test": ("test.json",),
}
USED = ("img_name", "question", "answer", "modality", "location")


def convert_slake(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
    language: str | None = "en",
    boxes: bool = True,
) -> Iterator[Sample]:
    """Converts the Slake1.0 folder into `Sample`s, images and masks referenced in place.

    Expected layout (https://www.med-vqa.com/slake/)::

        Slake1.0/
        ├── train.json  validate.json (or validation.json)  test.json
        └── imgs/
            └── xmlab102/
                ├── source.jpg        the image
                ├── mask.png          organ segmentation
                ├── detection.json    organ -> [x, y, w, h] boxes in pixels
                └── question.json     (not read: the split files hold every question)

    Records have ``qid``, ``img_id``, ``img_name`` (``xmlab102/source.jpg``, under
    ``imgs/``), ``question``, ``answer``, ``q_lang`` (``en``/``zh``), ``answer_type``
    (``OPEN``/``CLOSED``), ``modality``, ``location``, ``content_type`` and ``base_type``.

    Mapping: CLOSED yes/no answers (``是``/``否`` too) -> ``closed``; other CLOSED and OPEN
    answers -> ``open``. ``location`` -> ``anatomy``; ``mask.png`` -> ``mask`` when present.

    Boxes: each ``detection.json`` entry (a list of ``{organ: [x, y, w, h]}`` objects, or one
    object of organ -> box(es)) is converted to medvl's normalised ``[x1, y1, x2, y2]`` with
    the size of ``source.jpg`` and kept in ``meta["organ_boxes"]`` (organ -> list of boxes).
    ``box`` itself is set only when it is unambiguous: a ``content_type`` ``Position``
    question naming exactly one detected organ (the longest name wins, so "left lung" beats
    "lung") that has exactly one box; ``meta["box_organ"]`` then names it. The answer type
    is unchanged: the box marks the region the question is about.

    Args:
        src: The Slake1.0 folder.
        out_dir: Folder of the manifest the paths are made relative to (default ``src``).
        split: ``"train"``, ``"val"`` or ``"test"``; None for all.
        report: Collects skipped records; a fresh one when None.
        language: ``"en"`` (default) or ``"zh"`` keeps that ``q_lang``; None keeps both.
        boxes: Read ``detection.json`` files (organ boxes in meta, ``box`` as above).

    Yields:
        One `Sample` per question; id ``slake-<split>-<qid>``.

    Raises:
        AdapterError: No split file in ``src``, or ``split`` has no file.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("slake", str(src))
    split = norm_split(split)
    files = {
        name: path
        for name, candidates in SPLIT_FILES.items()
        for path in [next((src / c for c in candidates if (src / c).is_file()), None)]
        if path is not None
    }
    if not files:
        expected = "'train.json', 'validate.json' (or 'validation.json') or 'test.json'"
        raise missing_layout("SLAKE", expected, src, "and images in 'imgs/xmlab*/source.jpg'")
    wanted = " or ".join(f"'{c}'" for c in SPLIT_FILES.get(split or "", ())) or "a split file"
    check_split(split, files, wanted, src)
    box_cache: dict[Path, dict[str, list[list[float]]]] = {}
    for name, path in files.items():
        if split is not None and name != split:
            continue
        records = load_records(path)
        for index, record in enumerate(progress(records, f"SLAKE {name}", len(records))):
            if not isinstance(record, dict):
                report.skip("record is not a JSON object", f"{path.name}: record {index}")
                continue
            where = f"{path.name}: record {index} (qid {record.get('qid', '?')})"
            if language is not None and text(record.get("q_lang")).lower() != language:
                continue
            sample = _sample(record, name, src, out_dir, where, report, boxes, box_cache)
            if sample is not None:
                yield sample


def _sample(
    record: dict[str, Any],
    split: str,
    src: Path,
    out_dir: Path,
    where: str,
    report: ConvertReport,
    boxes: bool,
    box_cache: dict[Path, dict[str, list[list[float]]]],
) -> Sample | None:
    image = src / "imgs" / text(record.get("img_name"))
    if not text(record.get("img_name")) or not image.is_file():
        report.skip("image file not found", f"{where}: {relpath(image, src)}")
        return None
    answer = text(record.get("answer"))
    closed = text(record.get("answer_type")).upper() == "CLOSED"
    yn = yes_no(answer) if closed else None
    mask = image.parent / "mask.png"
    if not mask.is_file():
        report.note("mask.png missing, sample kept without a mask", where)
    meta = extra_meta(record, USED)
    box = None
    if boxes:
        if image.parent not in box_cache:
            box_cache[image.parent] = _organ_boxes(image, report)
        organ_boxes = box_cache[image.parent]
        if organ_boxes:
            meta["organ_boxes"] = organ_boxes
        if text(record.get("content_type")).lower() == "position":
            organ = question_organ(text(record.get("question")), organ_boxes)
            if organ is not None and len(organ_boxes[organ]) == 1:
                box, meta["box_organ"] = organ_boxes[organ][0], organ
    return make_sample(
        report,
        where,
        id=f"slake-{split}-{text(record.get('qid'))}",
        image=relpath(image, out_dir),
        modality=text(record.get("modality")),
        anatomy=text(record.get("location")),
        question=text(record.get("question")),
        answer=yn or answer,
        answer_type="closed" if yn else "open",
        box=box,
        mask=relpath(mask, out_dir) if mask.is_file() else None,
        split=split,
        source=SOURCE,
        meta=meta,
    )


def _organ_boxes(image: Path, report: ConvertReport) -> dict[str, list[list[float]]]:
    """The folder's ``detection.json`` as organ -> normalised boxes ({} when absent)."""
    from PIL import Image

    path = image.parent / "detection.json"
    if not path.is_file():
        return {}
    with Image.open(image) as im:  # reads the header only
        width, height = im.size
    try:
        raw = load_json(path)
    except (AdapterError, UnicodeDecodeError):
        report.note("unreadable detection.json left out", str(path))
        return {}
    entries = raw if isinstance(raw, list) else [raw]
    out: dict[str, list[list[float]]] = {}
    for entry in entries:
        for organ, value in entry.items() if isinstance(entry, dict) else ():
            nested = isinstance(value, (list, tuple)) and value and isinstance(value[0], list)
            many = value if nested else [value]
            for xywh in many:
                box = xywh_to_box(xywh, width, height)
                if box is None:
                    report.note("malformed detection.json box left out", f"{path}: {organ}")
                else:
                    out.setdefault(str(organ), []).append(box)
    return out


def xywh_to_box(xywh: Any, width: int, height: int) -> list[float] | None:
    """A pixel ``[x, y, w, h]`` box as normalised ``[x1, y1, x2, y2]`` (edges as corners).

    Clipped to the image and rounded to 6 decimals; None for anything but 4 numbers with
    ``w, h >= 0``.

    Example:
        >>> xywh_to_box([10, 20, 30, 40], width=100, height=200)
        [0.1, 0.1, 0.4, 0.3]
    """
    if not isinstance(xywh, (list, tuple)) or len(xywh) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xywh):
        return None
    x, y, w, h = (float(v) for v in xywh)
    if w < 0 or h < 0:
        return None
    sizes = (width, height, width, height)
    corners = (x, y, x + w, y + h)
    return [round(min(max(c / s, 0.0), 1.0), 6) for c, s in zip(corners, sizes, strict=True)]


def question_organ(question: str, organ_boxes: dict[str, list[list[float]]]) -> str | None:
    """The one detected organ a question names (whole words, any case), else None.

    A name found inside a longer matched name (``Lung`` in ``Left Lung``) does not count.
    """
    spans = []
    for organ in organ_boxes:
        words = r"\s+".join(re.escape(w) for w in organ.split())
        spans += [(m.start(), m.end(), organ) for m in re.finditer(rf"\b{words}\b", question, re.I)]
    kept = {
        organ
        for start, end, organ in spans
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
    }
    return kept.pop() if len(kept) == 1 else None

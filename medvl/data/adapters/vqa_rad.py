"""VQA-RAD (Lau et al. 2018): radiology questions written by clinicians, from its OSF release."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medvl.data.adapters._common import (
    ConvertReport,
    check_split,
    extra_meta,
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

SOURCE = "VQA-RAD"
JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
ORGANS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}


def convert_vqa_rad(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
) -> Iterator[Sample]:
    """Converts the VQA-RAD release folder into `Sample`s, images referenced in place.

    Expected layout (the OSF release, https://osf.io/89kps/)::

        VQA-RAD/
        ├── VQA_RAD Dataset Public.json     list of question records
        └── VQA_RAD Image Folder/
            └── synpic54610.jpg ...

    Each record has ``qid``, ``image_name``, ``question``, ``answer`` (text or a number),
    ``answer_type`` (``CLOSED``/``OPEN``, sometimes with stray spaces), ``question_type``,
    ``image_organ`` (``HEAD``/``CHEST``/``ABD``) and ``phrase_type``; a ``phrase_type``
    starting with ``test`` marks the test split, every other record is train.

    Mapping: CLOSED yes/no answers -> ``closed`` (answer ``yes``/``no``); other CLOSED
    answers (``"left"``, ``"CT"``) and OPEN -> ``open``. ``image_organ`` -> ``anatomy``.
    The other fields, the raw ``answer_type`` as ``orig_answer_type`` included, go to
    ``meta``. The JSON carries no modality, so ``modality`` stays empty.

    Args:
        src: The dataset folder.
        out_dir: Folder of the manifest the paths are made relative to (default ``src``).
        split: ``"train"`` or ``"test"``; None for both.
        report: Collects skipped records; a fresh one when None.

    Yields:
        One `Sample` per question; id ``vqa-rad-<qid>``.

    Raises:
        AdapterError: ``src`` lacks the JSON file, or ``split`` is unknown.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("vqa_rad", str(src))
    split = norm_split(split)
    path = src / JSON_NAME
    if not path.is_file():
        raise missing_layout("VQA-RAD", f"'{JSON_NAME}'", src, f"and images in '{IMAGE_DIR}/'")
    check_split(split, {"train": 1, "test": 1}, f"'{JSON_NAME}'", src)
    records = load_records(path)
    for index, record in enumerate(progress(records, "VQA-RAD", len(records))):
        if not isinstance(record, dict):
            report.skip("record is not a JSON object", f"{JSON_NAME}: record {index}")
            continue
        where = f"{JSON_NAME}: record {index} (qid {record.get('qid', '?')})"
        record_split = "test" if text(record.get("phrase_type")).startswith("test") else "train"
        if split is not None and record_split != split:
            continue
        image = src / IMAGE_DIR / text(record.get("image_name"))
        if not text(record.get("image_name")) or not image.is_file():
            report.skip("image file not found", f"{where}: {relpath(image, src)}")
            continue
        answer = text(record.get("answer"))
        closed = text(record.get("answer_type")).upper() == "CLOSED"
        yn = yes_no(answer) if closed else None
        sample = make_sample(
            report,
            where,
            id=f"vqa-rad-{text(record.get('qid')) or index}",
            image=relpath(image, out_dir),
            anatomy=ORGANS.get(text(record.get("image_organ")).upper(), ""),
            question=text(record.get("question")),
            answer=yn or answer,
            answer_type="closed" if yn else "open",
            split=record_split,
            source=SOURCE,
            meta=extra_meta(record, ("image_name", "question", "answer")),
        )
        if sample is not None:
            yield sample

"""OmniMedVQA (Hu et al. 2024): multiple-choice questions over 73 medical image datasets."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvl.data.adapters._common import (
    AdapterError,
    ConvertReport,
    extra_meta,
    load_records,
    make_sample,
    missing_layout,
    norm_split,
    progress,
    relpath,
    require_dir,
    text,
)
from medvl.data.sample import Sample

SOURCE = "OmniMedVQA"
ACCESS = {"open": "Open-access", "restricted": "Restricted-access"}
USED = ("question", "image_path", "modality_type", "modality")


def convert_omnimedvqa(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
    access: str | tuple[str, ...] = ("open", "restricted"),
) -> Iterator[Sample]:
    """Converts the OmniMedVQA folder into ``choice`` `Sample`s, images referenced in place.

    Expected layout (the release, https://huggingface.co/datasets/foreverbeliever/OmniMedVQA)::

        OmniMedVQA/
        ├── QA_information/
        │   ├── Open-access/<dataset>.json         list of question records
        │   └── Restricted-access/<dataset>.json   (images obtained separately)
        └── Images/<dataset>/...

    Records have ``question_id``, ``question_type``, ``question``, ``gt_answer`` (the text
    of the right option), ``image_path`` (relative to the folder, ``Images/...``),
    ``option_A`` .. ``option_D`` (some questions have only two or three), ``modality_type``
    (one file spells it ``modality``) and ``dataset``.

    Mapping: options -> ``options``; the answer letter is the one option whose text equals
    ``gt_answer`` (exactly, else ignoring case, spaces and a final period); a record whose
    ``gt_answer`` matches no option, or several, is skipped. ``modality_type`` ->
    ``modality``; ``question_type``, ``dataset``, ``question_id``, ``gt_answer`` and the
    access folder (``access``: ``open``/``restricted``) go to ``meta``. OmniMedVQA is an evaluation
    benchmark, so every sample has split ``test``.

    Args:
        src: The OmniMedVQA folder.
        out_dir: Folder of the manifest the paths are made relative to (default ``src``).
        split: None or ``"test"`` (the only split).
        report: Collects skipped records; a fresh one when None.
        access: Which QA folders to read: ``"open"``, ``"restricted"`` or a tuple of both.

    Yields:
        One `Sample` per question; id ``omnimedvqa-<question_id>``.

    Raises:
        AdapterError: No ``QA_information/<access>/*.json`` in ``src``, or another split.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("omnimedvqa", str(src))
    if norm_split(split) not in (None, "test"):
        raise AdapterError(f"OmniMedVQA has only a 'test' split, not {split!r}")
    access = (access,) if isinstance(access, str) else tuple(access)
    if unknown := [a for a in access if a not in ACCESS]:
        raise AdapterError(f"unknown access {unknown}; choose from {', '.join(ACCESS)}")
    folders = [src / "QA_information" / ACCESS[a] for a in access]
    files = [p for folder in folders for p in sorted(folder.glob("*.json"))]
    if not files:
        shown = " or ".join(f"'QA_information/{ACCESS[a]}/*.json'" for a in access)
        raise missing_layout("OmniMedVQA", shown, src)
    for path in progress(files, "OmniMedVQA files", len(files)):
        kind = "restricted" if path.parent.name == ACCESS["restricted"] else "open"
        for index, record in enumerate(load_records(path)):
            where = f"{path.parent.name}/{path.name}: record {index}"
            if not isinstance(record, dict):
                report.skip("record is not a JSON object", where)
                continue
            fallback_id = f"{path.stem}-{index}"
            sample = _sample(record, kind, fallback_id, src, out_dir, where, report)
            if sample is not None:
                yield sample


def _sample(
    record: dict[str, Any],
    access: str,
    fallback_id: str,
    src: Path,
    out_dir: Path,
    where: str,
    report: ConvertReport,
) -> Sample | None:
    image = src / text(record.get("image_path"))
    if not text(record.get("image_path")) or not image.is_file():
        report.skip("image file not found", f"{where}: {text(record.get('image_path'))}")
        return None
    options, option_keys = {}, []
    for letter in string.ascii_uppercase:
        value = text(record.get(f"option_{letter}"))
        if not value:
            break
        options[letter] = value
        option_keys.append(f"option_{letter}")
    answer = answer_letter(text(record.get("gt_answer")), options)
    if answer is None:
        report.skip("gt_answer matches no option (or several)", where)
        return None
    # Some files spell the key "modality" instead of "modality_type"; take whichever is set.
    modality = text(record.get("modality_type")) or text(record.get("modality"))
    meta = {"access": access, **extra_meta(record, USED + tuple(option_keys))}
    return make_sample(
        report,
        where,
        id=f"omnimedvqa-{text(record.get('question_id')) or fallback_id}",
        image=relpath(image, out_dir),
        modality=modality,
        question=text(record.get("question")),
        options=options or None,
        answer=answer,
        answer_type="choice",
        split="test",
        source=SOURCE,
        meta=meta,
    )


def _loose(value: str) -> str:
    return " ".join(value.lower().rstrip(".").split())


def answer_letter(answer: str, options: dict[str, str]) -> str | None:
    """The letter of the one option whose text is ``answer`` (exact, then loosely); else None."""
    for same in (lambda o: o == answer, lambda o: _loose(o) == _loose(answer)):
        letters = [letter for letter, option in options.items() if same(option)]
        if len(letters) == 1:
            return letters[0]
        if len(letters) > 1:
            return None
    return None

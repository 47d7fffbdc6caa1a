"""PMC-VQA (Zhang et al. 2023): multiple-choice questions on PubMed Central figures."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from medvl.data.adapters._common import (
    AdapterError,
    ConvertReport,
    check_split,
    extra_meta,
    make_sample,
    missing_layout,
    norm_split,
    progress,
    relpath,
    require_dir,
    text,
)
from medvl.data.adapters.omnimedvqa import answer_letter
from medvl.data.sample import Sample

SOURCE = "PMC-VQA"
# The files on the Hub are train_2.csv/test_2.csv although the README says train2.csv.
SPLIT_FILES = {
    1: {"train": ("train.csv",), "test": ("test.csv",), "test_clean": ("test_clean.csv",)},
    2: {"train": ("train_2.csv", "train2.csv"), "test": ("test_2.csv", "test2.csv")},
}
IMAGE_DIRS = {1: ("images", "figures"), 2: ("images_2", "images2", "figures", "images")}
LETTERS = "ABCD"
USED = ("Figure_path", "Question", "Answer", "Anwser", "Answer_label", "Anwser_label")


def convert_pmc_vqa(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
    version: int = 1,
) -> Iterator[Sample]:
    """Converts the PMC-VQA folder into ``choice`` `Sample`s, images referenced in place.

    Expected layout (https://huggingface.co/datasets/xmcmic/PMC-VQA, zips unpacked)::

        PMC-VQA/
        ├── train.csv  test.csv  test_clean.csv      version 1
        ├── train_2.csv  test_2.csv                  version 2 (train2.csv/test2.csv accepted)
        ├── images/PMC1064097_F1.jpg ...            from images.zip (or figures/)
        └── images_2/...                            from images_2.zip (or figures/)

    Columns: ``Figure_path``, ``Question``, ``Answer`` (``Anwser`` in some copies),
    ``Choice A`` .. ``Choice D`` whose values repeat the letter (``"A:text"``, ``" A:text"``:
    stripped here), ``Answer_label`` (the letter; version 2 has none and puts the letter in
    ``Answer``). Other columns go to ``meta``.

    Mapping: -> ``choice`` with the stripped options; the answer is ``Answer_label``, or the
    option whose text equals ``Answer`` when the label is missing. Empty trailing choices are
    dropped; a record with a gap (A, B, D) or no recoverable answer is skipped.

    Args:
        src: The PMC-VQA folder.
        out_dir: Folder of the manifest the paths are made relative to (default ``src``).
        split: ``"train"``, ``"test"`` or (version 1) ``"test_clean"``, the cleaned subset of
            test (kept as split ``test_clean``); None for train and test.
        report: Collects skipped records; a fresh one when None.
        version: 1 (``train.csv``...) or 2 (``train_2.csv``..., non-compound figures).

    Yields:
        One `Sample` per question; id ``pmc-vqa<version>-<split>-<row>`` (row from 0).

    Raises:
        AdapterError: No CSV of that version in ``src``, or ``split`` has no CSV.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("pmc_vqa", str(src))
    if version not in SPLIT_FILES:
        raise AdapterError(f"PMC-VQA version must be 1 or 2, got {version!r}")
    split = norm_split(split)
    wanted = SPLIT_FILES[version]
    files = {
        name: path
        for name, candidates in wanted.items()
        for path in [next((src / c for c in candidates if (src / c).is_file()), None)]
        if path is not None
    }
    if not files:
        shown = ", ".join(f"'{c[0]}'" for c in wanted.values())
        raise missing_layout("PMC-VQA", shown, src, f"version {version}; images in 'images/'")
    check_split(split, files, " or ".join(f"'{c}'" for c in wanted.get(split or "", ())), src)
    image_dirs = [src / d for d in IMAGE_DIRS[version] if (src / d).is_dir()]
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # captions in v2 can be long
    for name, path in files.items():
        # test_clean is a hand-checked subset of test: only converted when asked for, so a
        # whole-dataset manifest holds each question once.
        if (split is None and name == "test_clean") or (split is not None and name != split):
            continue
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row_index, row in enumerate(progress(csv.DictReader(f), f"PMC-VQA {name}")):
                where = f"{path.name}: row {row_index}"
                sample = _sample(row, name, row_index, version, src, image_dirs, out_dir, where,
                                 report)  # fmt: skip
                if sample is not None:
                    yield sample


def strip_choice(value: str, letter: str) -> str:
    """A choice without the letter prefix the CSVs repeat: ``" A:Focal"`` -> ``"Focal"``.

    Only the column's own letter is stripped (``"A:"``, ``"A: "``, ``"(A)"``, ``"A."``), so a
    choice that merely starts with a capital letter is left alone.
    """
    prefix = re.compile(rf"^\s*\(?{letter}\s*[:.)]\s*", re.I)
    return prefix.sub("", value, count=1).strip()


def _find_image(figure: str, src: Path, image_dirs: list[Path]) -> Path | None:
    candidates = [src / figure] + [d / figure for d in image_dirs]
    candidates += [d / Path(figure).name for d in image_dirs]
    return next((p for p in candidates if p.is_file()), None)


def _sample(
    row: dict[str, str],
    split: str,
    index: int,
    version: int,
    src: Path,
    image_dirs: list[Path],
    out_dir: Path,
    where: str,
    report: ConvertReport,
) -> Sample | None:
    figure = text(row.get("Figure_path"))
    image = _find_image(figure, src, image_dirs) if figure else None
    if image is None:
        report.skip("image file not found", f"{where}: {figure}")
        return None
    choices = [strip_choice(text(row.get(f"Choice {letter}")), letter) for letter in LETTERS]
    while choices and not choices[-1]:
        choices.pop()
    if not choices or not all(choices):
        report.skip("choices missing or with a gap", where)
        return None
    options = dict(zip(LETTERS, choices, strict=False))
    label = text(row.get("Answer_label") or row.get("Anwser_label")).upper()
    answer_text = text(row.get("Answer") or row.get("Anwser"))
    # Version 2 has no label column: its Answer holds the letter ("B", "B:", "(B)").
    bare = re.fullmatch(r"\(?([A-Za-z])\)?\s*[:.)]?", answer_text.strip())
    if label not in options and bare and bare.group(1).upper() in options:
        label = bare.group(1).upper()
    answer = label if label in options else answer_letter(answer_text, options)
    if answer is None:
        report.skip("answer label missing and answer text matches no choice", where)
        return None
    meta = extra_meta(row, USED + tuple(f"Choice {letter}" for letter in LETTERS))
    meta["answer_text"] = answer_text
    return make_sample(
        report,
        where,
        id=f"pmc-vqa{version}-{split}-{index}",
        image=relpath(image, out_dir),
        question=text(row.get("Question")),
        options=options,
        answer=answer,
        answer_type="choice",
        split=split,
        source=SOURCE,
        meta=meta,
    )

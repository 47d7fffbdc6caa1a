"""3DReasonKnee (Sambara et al. 2025): MOAKS grading questions on 3D knee MRI (OAI DESS).

What the public release confirms (``rajpurkarlab/3DReasonKnee`` code and Hub files): split
CSVs ``data/split_files/<split>_split.csv`` with ``patient_id``, ``time``, ``study_folder``,
``series_folder``, ``knee_side``, ``image_filepath`` (a ``.nii.gz`` volume) and
``label_filepath``; question files ``data/question_files/questions_*.json`` mapping a
question id to a prompt that asks for MOAKS grades as JSON, e.g.
``{"MOAKS_scores": {"patella medial BML": {"Size of BML (including cyst)": 2, ...}}}``; and
the key ``<patient_id>_<time>_<study_folder>_<series_folder>_<knee_side>_<question_id>``
the official scripts give each (volume, question) pair.

What is ASSUMED (the grade files could not be confirmed): the reference grades come from a
JSON object keyed by that pair key, each value either the ``MOAKS_scores`` object above or a
record ``{"MOAKS_scores": ..., "reasoning": [...] or "...", "bbox": [x1, y1, z1, x2, y2, z2]}``
(box already normalised to [0, 1]). Point ``answers=`` at the file if it lives elsewhere.
``label_filepath`` is taken to be the segmentation volume and becomes ``mask``. The MRI
volumes (from the OAI) are usually elsewhere than the CSVs say: ``image_root`` relocates them.
"""

from __future__ import annotations

import csv
import json
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
    make_sample,
    missing_layout,
    norm_split,
    progress,
    relpath,
    require_dir,
    text,
)
from medvl.data.sample import Sample

SOURCE = "3DReasonKnee"
KEY_COLUMNS = ("patient_id", "time", "study_folder", "series_folder", "knee_side")
DEFAULT_ANSWERS = ("answer_files/answers.json", "answers.json")
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
SCORE_KEYS = ("MOAKS_scores", "MOAKS_grade", "MOAKS_grades", "MOAKS_score")
RECORD_KEYS = ("reasoning", "bbox")
_SCALE = re.compile(r"grade from 0\s*-\s*(\d+)")


def convert_reasonknee(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
    questions: str | Path = "questions_nobbox_guided.json",
    answers: str | Path | None = None,
    image_root: str | Path | None = None,
    per_component: bool = False,
) -> Iterator[Sample]:
    """Converts 3DReasonKnee into ``open``/``severity`` `Sample`s on 3D volumes.

    Expected layout (``src`` may be the repository or its ``data/`` folder)::

        3DReasonKnee/data/
        ├── split_files/{train,val,test}_split.csv     image_filepath, label_filepath, ...
        ├── question_files/questions_nobbox_guided.json  {question_id: question text}
        └── answer_files/answers.json                    ASSUMED grades (module docstring)

    Mapping: one sample per (volume, question) with reference grades. The 69 released
    question formats are read: grades under ``MOAKS_scores`` or ``MOAKS_grade`` or at the top
    level, per component (``{"Size of BML": 2, ...}``) or one plain grade per region
    (``{"Hoffa-Synovitis": 2}``); a ``<finding>_bbox`` list of slice/pixel bounds goes to
    ``meta["bbox_slices"]``; the scale's top from the question ("grade from 0-8") to
    ``meta["max_grade"]``. A question asking for several grades -> ``open`` whose answer is
    the compact JSON ``{"MOAKS_scores": ...}`` (the parsed grades also in
    ``meta["moaks_scores"]``); a single ``presence`` of 0/1 -> ``closed`` yes/no; any other
    single grade -> ``severity`` with that grade. ``per_component=True`` instead emits one
    ``severity`` sample per graded component, the question suffixed with which grade to give.
    ``reasoning`` and a normalised ``bbox`` from the grade record become ``reasoning`` and
    ``box``. The CSV columns go to ``meta``.

    Args:
        src: The dataset folder.
        out_dir: Folder of the manifest the paths are made relative to (default ``src``).
        split: A split with a ``<split>_split.csv`` (``train``, ``val``, ``test``); None for all.
        report: Collects skipped records; a fresh one when None.
        questions: A file name in ``question_files/`` or a path.
        answers: The grades JSON (default: ``answer_files/answers.json`` or ``answers.json``).
        image_root: Folder to look in (path as written, then file name) for volumes and
            labels that are not where the CSV says.
        per_component: One ``severity`` sample per MOAKS component.

    Yields:
        `Sample`s with id ``3dreasonknee-<pair key>`` (``-<n>`` per component).

    Raises:
        AdapterError: Split CSVs, question file or grades file missing, or ``split`` unknown.
    """
    src = require_dir(src)
    base = src / "data" if (src / "data" / "split_files").is_dir() else src
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("3dreasonknee", str(src))
    split = norm_split(split)
    found = {norm_split(p.stem.removesuffix("_split")): p
             for p in (base / "split_files").glob("*_split.csv")}  # fmt: skip
    csvs = dict(sorted(found.items(), key=lambda kv: (SPLIT_ORDER.get(kv[0] or "", 3), kv[0])))
    if not csvs:
        raise missing_layout("3DReasonKnee", "'split_files/<split>_split.csv'", base)
    check_split(split, csvs, f"'split_files/{split}_split.csv'", base)
    question_file = _existing(base, [Path(questions), Path("question_files") / questions])
    if question_file is None:
        raise missing_layout("3DReasonKnee", f"'question_files/{questions}'", base)
    answers_file = _existing(base, [Path(answers)] if answers else list(map(Path, DEFAULT_ANSWERS)))
    if answers_file is None:
        shown = f"'{answers}'" if answers else " or ".join(f"'{a}'" for a in DEFAULT_ANSWERS)
        raise missing_layout(
            "3DReasonKnee",
            f"the grades file {shown}",
            base,
            "its layout is assumed, see the module docstring; pass answers=",
        )
    question_data = load_json(question_file)
    if not isinstance(question_data, dict):
        raise AdapterError(f"{question_file}: expected an object of question id -> question")
    question_map = {str(k): text(v) for k, v in question_data.items()}
    grades = load_json(answers_file)
    if not isinstance(grades, dict):
        raise AdapterError(f"{answers_file}: expected an object keyed by volume/question key")
    roots = [src, base] + ([Path(image_root).expanduser().absolute()] if image_root else [])
    for name, path in csvs.items():
        if split is not None and name != split:
            continue
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        for row_index, row in enumerate(progress(rows, f"3DReasonKnee {name}", len(rows))):
            where = f"{path.name}: row {row_index}"
            image = _locate(text(row.get("image_filepath")), roots)
            if image is None:
                report.skip("volume file not found", f"{where}: {row.get('image_filepath')}")
                continue
            label = _locate(text(row.get("label_filepath")), roots)
            if label is None and text(row.get("label_filepath")):
                report.note("label file not found, sample kept without a mask", where)
            volume_key = "_".join(text(row.get(c)) for c in KEY_COLUMNS)
            common = dict(
                image=relpath(image, out_dir), modality="MRI", anatomy="knee", split=name,
                source=SOURCE, mask=relpath(label, out_dir) if label else None,
            )  # fmt: skip
            meta = extra_meta(row, ("image_filepath", "label_filepath"))
            for qid, question in question_map.items():
                key = f"{volume_key}_{qid}"
                if key not in grades:
                    report.skip("no reference grades for this volume and question", key)
                    continue
                yield from _samples(key, qid, question, grades[key], common, meta, report,
                                    per_component)  # fmt: skip


def _existing(base: Path, candidates: list[Path]) -> Path | None:
    for candidate in candidates:
        path = candidate if candidate.is_absolute() else base / candidate
        if path.is_file():
            return path
    return None


def _locate(path: str, roots: list[Path]) -> Path | None:
    if not path:
        return None
    written = Path(path)
    candidates = [written] if written.is_absolute() else [r / written for r in roots]
    candidates += [r / written.name for r in roots[2:]]  # image_root: by file name
    return next((p for p in candidates if p.is_file()), None)


def _samples(
    key: str,
    qid: str,
    question: str,
    value: Any,
    common: dict[str, Any],
    meta: dict[str, Any],
    report: ConvertReport,
    per_component: bool,
) -> Iterator[Sample]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    record = value if isinstance(value, dict) else {}
    top = next((k for k in SCORE_KEYS if k in record), None)
    # The released formats: {"MOAKS_scores": {...}}, {"MOAKS_grade": {...}}, or the regions
    # at the top ({"medial_meniscal_hypertrophy": {"presence": 0}}).
    scores = record[top] if top else {k: v for k, v in record.items() if k not in RECORD_KEYS}
    slices = {k: v for k, v in scores.items() if _is_numbers(v)} if isinstance(scores, dict) else {}
    scores = {k: v for k, v in scores.items() if k not in slices} if slices else scores
    grades = _grades(scores)
    if grades is None:
        report.skip("grades are not a MOAKS_scores object of integer grades", key)
        return
    reasoning = record.get("reasoning")
    reasoning = [reasoning] if isinstance(reasoning, str) else reasoning
    bbox = record.get("bbox")
    box = bbox if _is_unit_box(bbox) else None
    extra = {**meta, "question_id": qid, "moaks_scores": scores}
    if (top_grade := _SCALE.search(question)) is not None:
        extra["max_grade"] = int(top_grade.group(1))
    if slices:  # "<finding>_bbox": [start_slice, end_slice, x_min, x_max, y_min, y_max]
        extra["bbox_slices"] = slices
    if bbox is not None and box is None:
        report.note("bbox not normalised [x1, y1, z1, x2, y2, z2]; kept as meta bbox_raw", key)
        extra["bbox_raw"] = bbox
    fields = dict(common, question=question, reasoning=reasoning, box=box)
    if len(grades) == 1 and grades[0][1] == "presence" and grades[0][2] in (0, 1):
        sample = make_sample(report, key, id=f"3dreasonknee-{key}",
                             answer="yes" if grades[0][2] else "no", answer_type="closed",
                             meta={**extra, "region": grades[0][0]}, **fields)  # fmt: skip
        if sample is not None:
            yield sample
        return
    if not per_component and len(grades) > 1:
        # The answer in the shape the question asks for.
        answer = json.dumps({top: scores} if top else scores, ensure_ascii=False)
        sample = make_sample(report, key, id=f"3dreasonknee-{key}", answer=answer,
                             answer_type="open", meta=extra, **fields)  # fmt: skip
        if sample is not None:
            yield sample
        return
    for n, (region, component, grade) in enumerate(grades):
        suffix = f"-{n}" if per_component and len(grades) > 1 else ""
        if per_component:
            ask = f'\nGive only the grade (0-3) of "{component}" for the {region}.'
            fields["question"] = question + ask
        sample = make_sample(
            report, key, id=f"3dreasonknee-{key}{suffix}", answer=str(grade),
            answer_type="severity", severity=grade,
            meta={**extra, "region": region, "component": component}, **fields,
        )  # fmt: skip
        if sample is not None:
            yield sample


def _grades(scores: Any) -> list[tuple[str, str, int]] | None:
    """(region, component, grade) triples of a MOAKS_scores object, or None if malformed."""
    if not isinstance(scores, dict) or not scores:
        return None
    out = []
    for region, components in scores.items():
        if not isinstance(components, dict):  # a plain grade under the region
            components = {"grade": components}
        if not components:
            return None
        for component, grade in components.items():
            if isinstance(grade, str) and grade.strip().isdigit():
                grade = int(grade)
            if not isinstance(grade, int) or isinstance(grade, bool) or grade < 0:
                return None
            out.append((str(region), str(component), grade))
    return out


def _is_numbers(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _is_unit_box(box: Any) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 6
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                for v in box)
    )  # fmt: skip

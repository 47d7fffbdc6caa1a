"""MM-Retinal-Reason (Wu et al. 2025): ophthalmic reasoning conversations, images as base64.

Multi-answer questions: a `Sample` of type ``choice`` has exactly one option letter, so a
question with several correct options ("B,E,F") becomes an ``open`` sample whose answer is
the letters sorted, upper-case and comma-separated without spaces (the format the official
evaluation asks the model for), with the options kept in ``options`` and
``meta["multi_answer"] = True``. Single-answer questions are ``choice``; true/false and
yes/no ones ``closed``; the rest ``open``.
"""

from __future__ import annotations

import csv
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvl.data.adapters._common import (
    AdapterError,
    ConvertReport,
    decode_base64_image,
    extra_meta,
    load_records,
    make_sample,
    missing_layout,
    norm_split,
    progress,
    relpath,
    require_dir,
    save_image_bytes,
    text,
    yes_no,
)
from medvl.data.adapters.omnimedvqa import answer_letter
from medvl.data.sample import Sample

SOURCE = "MM-Retinal-Reason"
MODALITIES = {"CFP": "fundus", "FFA": "FFA", "OCT": "OCT"}
USED = ("image", "images", "conversations", "messages", "reason")
_LETTERS = re.compile(r"^[A-Z](?:\s*[,;]\s*[A-Z])*$")
_TAG = r"<{0}>(.*?)</{0}>"


def convert_mm_retinal_reason(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
) -> Iterator[Sample]:
    """Converts MM-Retinal-Reason JSON files into `Sample`s, decoding images next to the manifest.

    Expected layout (https://huggingface.co/datasets/lxirich/MM-Retinal-Reason)::

        MM-Retinal-Reason/
        ├── basic_reasoning.json   complex_reasoning.json    lists of records (or .jsonl)
        ├── single_choice_test_data_CFP.json ...            other files of the same records
        └── single_choice_test_data_CFP.csv                 optional: image name -> base64

    A record: ``image`` (a list of base64 strings, or file names resolved through the
    file's ``<stem>.csv`` table with a ``base64`` column as the evaluation scripts use, or
    paths), ``conversations`` (``[{"from": "human", "value": ...}, {"from": "gpt",
    "value": ...}]``) or ``messages`` (``role``/``content``), ``reason`` (the reasoning
    trace) and, for complex cases, ``pmcid``, ``title``, ``caption``.

    Mapping: options written in the question (``A. ...``, ``(B) ...``, one per line or
    inline) move to ``options``; the answer inside ``<answer>...</answer>`` is used when
    present; multi-answer handling is in the module docstring. ``reason`` (else the
    ``<think>`` text) -> ``reasoning`` as one step. Images are written to
    ``<out_dir>/images/`` named by content hash. ``split`` is ``test``/``train`` when the
    file name says so, else the file's task: ``basic`` or ``complex``.

    Args:
        src: The dataset folder.
        out_dir: Folder of the manifest; decoded images go to its ``images/`` (default ``src``).
        split: Keep one split (see above) or one file stem; None for all files.
        report: Collects skipped records; a fresh one when None.

    Yields:
        One `Sample` per record; id ``mm-retinal-reason-<file stem>-<index>``.

    Raises:
        AdapterError: No ``*.json``/``*.jsonl`` file in ``src``, or none matches ``split``.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("mm_retinal_reason", str(src))
    files = sorted(p for p in src.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    if not files:
        expected = "'basic_reasoning.json' or 'complex_reasoning.json' (any *.json, *.jsonl)"
        raise missing_layout("MM-Retinal-Reason", expected, src)
    if split is not None:
        files = [p for p in files if norm_split(split) in (split_of(p.stem), p.stem.lower())]
        if not files:
            raise missing_layout("MM-Retinal-Reason", f"a JSON file for split {split!r}", src)
    for path in files:
        try:
            records = load_records(path)
        except AdapterError as e:  # a metadata JSON next to the data, say: count and go on
            report.skip("file is not a JSON list of records", f"{path.name}: {e}")
            continue
        table = _base64_table(path)
        modality = next((m for key, m in MODALITIES.items() if key in path.stem.upper()), "")
        for index, record in enumerate(progress(records, path.stem, len(records))):
            where = f"{path.name}: record {index}"
            if not isinstance(record, dict):
                report.skip("record is not a JSON object", where)
                continue
            images = _images(record, path, table, out_dir)
            if images is None:
                report.skip("image missing or not decodable", where)
                continue
            fields = parse_record(record)
            if fields is None:
                report.skip("no user question and assistant answer in the conversation", where)
                continue
            meta = {"file": path.stem, **fields.pop("meta"), **extra_meta(record, USED)}
            sample = make_sample(
                report, where, id=f"mm-retinal-reason-{path.stem}-{index}",
                image=images[0] if len(images) == 1 else images, modality=modality,
                anatomy="eye", split=split_of(path.stem), source=SOURCE, meta=meta, **fields,
            )  # fmt: skip
            if sample is not None:
                yield sample


def split_of(stem: str) -> str:
    """The split a file name stands for: ``test``/``train`` if it says so, else its task."""
    words = set(re.split(r"[^a-z]+", stem.lower()))
    if words & {"test", "train", "val"}:
        return next(w for w in ("test", "train", "val") if w in words)
    return stem.lower().removesuffix("_reasoning")


def _base64_table(path: Path) -> dict[str, str]:
    """The evaluation scripts' ``<stem>.csv`` (image name -> base64), if next to the file."""
    for table in (path.with_suffix(".csv"), path.parent / "base64" / f"{path.stem}.csv"):
        if table.is_file():
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            with open(table, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                first = (reader.fieldnames or [""])[0]
                return {row[first]: row.get("base64", "") for row in reader}
    return {}


def _images(record: dict[str, Any], path: Path, table: dict[str, str], out_dir: Path
            ) -> list[str] | None:  # fmt: skip
    entries = record.get("image", record.get("images"))
    entries = [entries] if isinstance(entries, str) else entries
    if not isinstance(entries, list) or not entries:
        return None
    out = []
    for entry in entries:
        if not isinstance(entry, str):
            return None
        file = path.parent / entry if len(entry) < 1024 else None  # base64 is never that short
        if file is not None and file.is_file():
            out.append(relpath(file, out_dir))
            continue
        data = decode_base64_image(table.get(entry, entry))
        saved = save_image_bytes(data, out_dir / "images") if data else None
        if saved is None:
            return None
        out.append(relpath(saved, out_dir))
    return out


def _turns(record: dict[str, Any]) -> tuple[str, str] | None:
    """(first user text, first assistant text after it) of ``conversations``/``messages``."""
    turns = record.get("conversations") or record.get("messages") or []
    user = assistant = None
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("from", turn.get("role", ""))).lower()
        content = turn.get("value", turn.get("content", ""))
        if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image"}]
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role in ("human", "user") and user is None:
            user = text(content)
        elif role in ("gpt", "assistant") and user is not None and assistant is None:
            assistant = text(content)
    return (user, assistant) if user and assistant else None


def parse_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """The question, options, answer, answer type, reasoning and meta of one record."""
    turns = _turns(record)
    if turns is None:
        return None
    question, reply = turns
    question = re.sub(r"<image>\s*", "", question).strip()
    tagged = re.search(_TAG.format("answer"), reply, re.S)
    answer = text(tagged.group(1)) if tagged else reply
    think = re.search(_TAG.format("think"), reply, re.S)
    reason = text(record.get("reason")) or (text(think.group(1)) if think else "")
    stem, options = split_options(question)
    meta: dict[str, Any] = {}
    fields = dict(question=stem if options else question, options=options,
                  reasoning=[reason] if reason else None, meta=meta)  # fmt: skip
    compact = answer.upper().rstrip(".").strip()
    if options and _LETTERS.match(compact):
        letters = sorted(set(re.findall(r"[A-Z]", compact)))
        if len(letters) > 1:
            meta["multi_answer"] = True
            return dict(fields, answer=",".join(letters), answer_type="open")
        return dict(fields, answer=letters[0], answer_type="choice")
    if options and (letter := answer_letter(answer, options)):
        return dict(fields, answer=letter, answer_type="choice")
    if (yn := yes_no(answer)) is not None:
        meta["orig_answer"] = answer
        return dict(fields, answer=yn, answer_type="closed")
    return dict(fields, answer=answer, answer_type="open")


def split_options(question: str) -> tuple[str, dict[str, str] | None]:
    """Splits ``"Which? A. x B. y"`` (inline or one per line) into the stem and options.

    Options must run A, B, C, ... in order, each letter followed by ``.``, ``)`` or ``:``
    (or wrapped as ``(A)``) at the start of a line or after a space. Text on the lines after
    the last option (an instruction) is kept with the stem. Fewer than two options: no split.
    """
    marks = []
    position = 0
    for letter in string.ascii_uppercase:
        found = re.compile(rf"(?:^|(?<=\s))(?:\({letter}\)|{letter}[.):])(?=\s)", re.M)
        match = found.search(question, position)
        if match is None:
            break
        marks.append((letter, match.start(), match.end()))
        position = match.end()
    if len(marks) < 2:
        return question, None
    options, tail = {}, ""
    for i, (letter, _, end) in enumerate(marks):
        stop = marks[i + 1][1] if i + 1 < len(marks) else len(question)
        body = question[end:stop].strip()
        if i + 1 == len(marks) and "\n" in body:
            body, tail = body.split("\n", 1)
        options[letter] = body.strip()
    if not all(options.values()):
        return question, None
    stem = re.sub(r"\s*(options|choices)\s*:?\s*$", "", question[: marks[0][1]], flags=re.I)
    return "\n".join(part for part in (stem.strip(), tail.strip()) if part), options

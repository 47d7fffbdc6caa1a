"""PathVQA (He et al. 2020): pathology questions from textbooks, in its two released layouts.

The original release stores the questions as pickles. Unpickling can run arbitrary code, so
by default they are read with an unpickler that refuses every class and function: the QA
files are plain lists of dicts of strings and load fine that way, while a tampered file
fails instead of executing. ``trust_pickle=True`` lifts the restriction for a folder you
trust (say, a release re-saved with pandas). The Hugging Face copy
(``flaviagiammarino/path-vqa``, Parquet with embedded images) is the safer format and is
read when there is no ``qas/`` folder.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    save_image_bytes,
    text,
    yes_no,
)
from medvl.data.sample import Sample

SOURCE = "PathVQA"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = ("", ".jpg", ".png", ".jpeg")


def convert_pathvqa(
    src: str | Path,
    *,
    out_dir: str | Path | None = None,
    split: str | None = None,
    report: ConvertReport | None = None,
    trust_pickle: bool = False,
) -> Iterator[Sample]:
    """Converts a PathVQA folder into `Sample`s.

    Expected layout, either the original release (images referenced in place)::

        pvqa/
        ├── images/{train,val,test}/train_0422.jpg ...
        └── qas/{train,val,test}/train_qa.pkl ...   (qas/train_qa.pkl also accepted)

    where each ``<split>_qa.pkl`` is a list of ``{"image": "train_0422", "question": ...,
    "answer": ...}`` dicts (``image`` names the file without its extension), or the
    Hugging Face copy (images decoded into ``<out_dir>/images/``, one file per distinct
    image)::

        path-vqa/
        └── data/{train,validation,test}-00000-of-0000N.parquet   image, question, answer

    Mapping: ``yes``/``no`` answers -> ``closed``, all others -> ``open``.

    Args:
        src: The dataset folder.
        out_dir: Folder of the manifest (paths are relative to it; default ``src``).
        split: ``"train"``, ``"val"`` or ``"test"``; None for all.
        report: Collects skipped records; a fresh one when None.
        trust_pickle: Allow the pickles to load any class (they can then run code).

    Yields:
        One `Sample` per question; id ``pathvqa-<split>-<index>``.

    Raises:
        AdapterError: Neither layout found, ``split`` unknown, or a pickle needs classes
            while ``trust_pickle`` is False.
    """
    src = require_dir(src)
    out_dir = Path(out_dir).absolute() if out_dir is not None else src
    report = report or ConvertReport("pathvqa", str(src))
    split = norm_split(split)
    if (src / "qas").is_dir():
        files = {s: p for s in SPLITS if (p := _qa_file(src, s)) is not None}
        if not files:
            raise missing_layout("PathVQA", "'qas/<split>/<split>_qa.pkl'", src)
        check_split(split, files, f"'qas/{split}/{split}_qa.pkl'", src)
        for name, path in files.items():
            if split is None or name == split:
                records = _load_pickle(path, trust_pickle)
                yield from _from_pickle(records, name, path, src, out_dir, report)
        return
    shards = {s: sorted((src / "data").glob(f"{_hf_name(s)}-*.parquet")) for s in SPLITS}
    shards = {s: paths for s, paths in shards.items() if paths}
    if not shards:
        raise missing_layout(
            "PathVQA",
            "'qas/<split>/<split>_qa.pkl' with 'images/<split>/'",
            src,
            "or the Hugging Face copy's 'data/<split>-*.parquet'",
        )
    check_split(split, shards, f"'data/{_hf_name(split or '')}-*.parquet'", src)
    for name, paths in shards.items():
        if split is None or name == split:
            yield from _from_parquet(paths, name, out_dir, report)


def _hf_name(split: str) -> str:
    return "validation" if split == "val" else split


def _qa_file(src: Path, split: str) -> Path | None:
    for path in (src / "qas" / split / f"{split}_qa.pkl", src / "qas" / f"{split}_qa.pkl"):
        if path.is_file():
            return path
    return None


class _DataOnlyUnpickler(pickle.Unpickler):
    """Loads lists, dicts, strings and numbers; refuses every class (so no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path, trust: bool) -> list[Any]:
    with open(path, "rb") as f:
        try:
            data = (pickle.Unpickler if trust else _DataOnlyUnpickler)(f, encoding="utf-8").load()
        except pickle.UnpicklingError as e:
            raise AdapterError(
                f"{path}: {e}; the PathVQA QA pickles hold plain lists of dicts. If this "
                "folder is trusted, pass trust_pickle=True (unpickling can run code)"
            ) from None
    if not isinstance(data, list):
        raise AdapterError(f"{path}: expected a list of question dicts, got {type(data).__name__}")
    return data


def _from_pickle(
    records: list[Any], split: str, path: Path, src: Path, out_dir: Path, report: ConvertReport
) -> Iterator[Sample]:
    for index, record in enumerate(progress(records, f"PathVQA {split}", len(records))):
        where = f"{relpath(path, src)}: record {index}"
        if not isinstance(record, dict):
            report.skip("record is not a dict", where)
            continue
        name = text(record.get("image"))
        folder = src / "images" / split
        image = next((p for s in IMAGE_SUFFIXES if (p := folder / f"{name}{s}").is_file()), None)
        if not name or image is None:
            report.skip("image file not found", f"{where}: images/{split}/{name}.jpg")
            continue
        sample = _sample(record, split, index, relpath(image, out_dir), where, report)
        if sample is not None:
            yield sample


def _from_parquet(
    paths: list[Path], split: str, out_dir: Path, report: ConvertReport
) -> Iterator[Sample]:
    import pyarrow.parquet as pq

    index = 0
    for path in paths:
        parquet = pq.ParquetFile(path)
        rows = (row for batch in parquet.iter_batches(batch_size=256) for row in batch.to_pylist())
        for row in progress(rows, f"PathVQA {split}", parquet.metadata.num_rows):
            where, index = f"{path.name}: row {index}", index + 1
            cell = row.get("image")
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            image = save_image_bytes(data, out_dir / "images") if data else None
            if image is None:
                report.skip("image bytes missing or not an image", where)
                continue
            record = {k: v for k, v in row.items() if k != "image"}
            sample = _sample(record, split, index - 1, relpath(image, out_dir), where, report)
            if sample is not None:
                yield sample


def _sample(
    record: dict[str, Any], split: str, index: int, image: str, where: str, report: ConvertReport
) -> Sample | None:
    answer = text(record.get("answer"))
    yn = yes_no(answer)
    return make_sample(
        report,
        where,
        id=f"pathvqa-{split}-{index}",
        image=image,
        modality="pathology",
        question=text(record.get("question")),
        answer=yn or answer,
        answer_type="closed" if yn else "open",
        split=split,
        source=SOURCE,
        meta=extra_meta(record, ("image", "question", "answer")),
    )

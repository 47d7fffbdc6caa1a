"""JSONL manifests of `Sample`s: read, stream, write, validate, and convert to `datasets`.

A manifest is a UTF-8 text file with one JSON object per line; blank lines are skipped but
still counted, so line numbers in errors match an editor's. Paths inside a manifest are
relative to the manifest's folder.

Every error names the manifest, the 1-based line and the field:

    data.jsonl:7: field 'box': expected 4 or 6 numbers in [0, 1], got [0.1, 0.2]
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvl._io import atomic_write
from medvl.data.sample import FIELDS, Sample, SampleError, check_fields, resolve_path, show

if TYPE_CHECKING:  # importing datasets costs about a second; only the conversion needs it
    import datasets

PathLike = str | os.PathLike


class ManifestError(ValueError):
    """A manifest line is not a valid sample.

    Attributes:
        path: The manifest, as given.
        line: 1-based line number.
        field: The key at fault, or None when the line is not a JSON object at all.
        message: The error without the ``path:line:`` prefix.
    """

    def __init__(self, path: PathLike, line: int, message: str, field: str | None = None):
        self.path, self.line, self.message, self.field = str(path), line, message, field
        super().__init__(f"{self.path}:{line}: {message}")

    def __reduce__(self):  # so errors survive pickling (multiprocessing workers)
        return type(self), (self.path, self.line, self.message, self.field)

    @classmethod
    def from_sample_error(cls, path: PathLike, line: int, error: SampleError) -> ManifestError:
        return cls(path, line, str(error), error.field)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of two equal keys, which hides hand-editing mistakes.
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def _lines(path: PathLike) -> Iterator[tuple[int, bytes]]:
    """Yields (line number, raw bytes) for each non-blank line."""
    # Bytes, decoded later by _decode: a bad byte then fails its own line, not the whole read.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM, as some Windows editors write
            if raw.strip():
                yield number, raw


def _decode(path: PathLike, number: int, raw: bytes) -> dict[str, Any]:
    try:
        # rstrip: with the newline left on, a truncated line errs at "line 2 column 1".
        record = json.loads(raw.decode("utf-8").rstrip(), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as e:
        raise ManifestError(path, number, f"not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(path, number, f"invalid JSON at column {e.colno}: {e.msg}") from None
    except _DuplicateKey as e:
        key = e.args[0]
        raise ManifestError(path, number, f"key '{key}' appears twice", key) from None
    if not isinstance(record, dict):
        raise ManifestError(path, number, f"expected a JSON object, got {show(record)}")
    return record


def _missing_files(image: Any, mask: Any, root: Path) -> list[SampleError]:
    """Errors for the image and mask paths that do not exist; None skips a field."""
    paths = [("image", p) for p in ([image] if isinstance(image, str) else image or [])]
    if mask is not None:
        paths.append(("mask", mask))
    return [
        SampleError(name, "an existing file or DICOM folder", f"{path} (does not exist)")
        for name, path in ((n, resolve_path(p, root)) for n, p in paths)
        if not path.exists()
    ]


def _duplicate(sample_id: str, first: int) -> SampleError:
    return SampleError("id", "an id not used before", f"{show(sample_id)} (also on line {first})")


def iter_manifest(path: PathLike, check_files: bool = False) -> Iterator[Sample]:
    """Streams the samples of a manifest, stopping at the first bad line.

    Args:
        path: The JSONL manifest.
        check_files: Also require every image and mask path to exist.

    Yields:
        One `Sample` per non-blank line, in file order.

    Raises:
        ManifestError: For the first bad line (invalid JSON, a broken field, a duplicate id,
            or with ``check_files`` a missing file).
    """
    root = Path(path).parent
    first_line: dict[str, int] = {}
    for number, raw in _lines(path):
        try:
            sample = Sample.from_dict(_decode(path, number, raw))
            if sample.id in first_line:
                raise _duplicate(sample.id, first_line[sample.id])
            first_line[sample.id] = number
            if check_files and (missing := _missing_files(sample.image, sample.mask, root)):
                raise missing[0]
        except SampleError as e:
            raise ManifestError.from_sample_error(path, number, e) from None
        yield sample


def read_manifest(path: PathLike, check_files: bool = False) -> list[Sample]:
    """Reads a whole manifest; see `iter_manifest` for the arguments and errors."""
    return list(iter_manifest(path, check_files=check_files))


def write_manifest(path: PathLike, samples: Iterable[Sample | Mapping[str, Any]]) -> Path:
    """Writes samples as JSONL, atomically: readers see the old file or the new one, whole.

    Args:
        path: Destination; its folder is created if needed.
        samples: `Sample`s, or records that `Sample.from_dict` accepts. Each is validated
            again, so samples edited after construction cannot produce a bad manifest.

    Returns:
        The path written.

    Raises:
        ManifestError: A sample is invalid, repeats an id, or has a `meta` value that is not
            JSON (NaN included). The old file is then left untouched.
    """
    path = Path(path)
    first_line: dict[str, int] = {}

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for number, sample in enumerate(samples, 1):
                try:
                    if isinstance(sample, Sample):
                        sample.validate()
                    else:
                        sample = Sample.from_dict(sample)
                    if sample.id in first_line:
                        raise _duplicate(sample.id, first_line[sample.id])
                    first_line[sample.id] = number
                    line = json.dumps(sample.to_dict(), ensure_ascii=False, allow_nan=False)
                except SampleError as e:
                    raise ManifestError.from_sample_error(path, number, e) from None
                except (TypeError, ValueError) as e:
                    raise ManifestError(path, number, f"cannot write as JSON: {e}") from None
                f.write(line + "\n")

    atomic_write(path, write)
    return path


COUNTED = ("answer_type", "split", "modality", "source")


@dataclass
class ManifestReport:
    """Everything `validate_manifest` found in one pass over a manifest.

    Attributes:
        path: The manifest.
        records: Non-blank lines.
        bad_records: Lines with at least one error.
        errors: Every error, in line order.
        counts: For each of `COUNTED`, value -> number of records that parse as samples.
    """

    path: str
    records: int = 0
    bad_records: int = 0
    errors: list[ManifestError] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in COUNTED})

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self, max_errors: int = 20) -> str:
        """A short human-readable report: totals, counts, then the first errors."""
        if self.ok:
            head = f"{self.path}: {self.records} records, all valid"
        else:
            head = (
                f"{self.path}: {self.records} records, {self.bad_records} with errors "
                f"({len(self.errors)} errors)"
            )
        lines = [head]
        for key, counter in self.counts.items():
            if counter:
                shown = ", ".join(f"{v or '(none)'} {n}" for v, n in counter.most_common())
                lines.append(f"  {key}: {shown}")
        if self.errors:
            lines.append("errors:")
            lines += [f"  {e}" for e in self.errors[:max_errors]]
            if len(self.errors) > max_errors:
                lines.append(f"  ... and {len(self.errors) - max_errors} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def validate_manifest(path: PathLike, check_files: bool = True) -> ManifestReport:
    """Checks a whole manifest and collects every error instead of stopping at the first.

    Args:
        path: The JSONL manifest.
        check_files: Also require every image and mask path to exist.

    Returns:
        A `ManifestReport`; ``report.ok`` is True when nothing is wrong, ``str(report)`` is the
        summary that ``medvl data validate`` prints.
    """
    root = Path(path).parent
    report = ManifestReport(path=str(path))
    first_line: dict[str, int] = {}
    for number, raw in _lines(path):
        report.records += 1
        try:
            record = _decode(path, number, raw)
        except ManifestError as e:
            report.errors.append(e)
            report.bad_records += 1
            continue
        values, problems = check_fields(record)  # values: only the fields that passed
        if not problems:
            for key in COUNTED:
                report.counts[key][values[key]] += 1
        if "id" in values:
            if values["id"] in first_line:
                problems.append(_duplicate(values["id"], first_line[values["id"]]))
            else:
                first_line[values["id"]] = number
        if check_files:
            problems += _missing_files(values.get("image"), values.get("mask"), root)
        report.errors += [ManifestError.from_sample_error(path, number, e) for e in problems]
        report.bad_records += bool(problems)
    return report


# --- Hugging Face datasets ---------------------------------------------------------------
#
# Arrow needs one type per column across all rows, so the conversion fixes them up front:
#   image      list<string>  the paths as written (a single path becomes a one-item list)
#   images     list<string>  the same paths made absolute: what loaders and TRL should read
#   box        list<double>  2D (4) and 3D (6) boxes share the column; null when absent
#   mask_path  string        the mask made absolute; null when absent
#   options    string        JSON object, null when absent: a struct column would take the
#                            union of all rows' letters and pad the rest with nulls
#   meta       string        JSON object ("{}" when empty): extra keys differ per row and type
# Other fields keep their natural type (string, int64 severity, list<string> reasoning).
# The schema is explicit, so a manifest without any box still gets a list<double> column and
# datasets built from different manifests concatenate.


def dataset_features() -> datasets.Features:
    """The `datasets.Features` of `manifest_to_dataset`, the same for every manifest."""
    from datasets import Features, List, Value

    text = Value("string")
    return Features({
        "id": text, "image": List(text), "images": List(text), "modality": text,
        "anatomy": text, "question": text, "options": text, "answer": text,
        "answer_type": text, "box": List(Value("float64")), "mask": text, "mask_path": text,
        "severity": Value("int64"), "reasoning": List(text), "split": text, "source": text,
        "meta": text,
    })  # fmt: skip


def sample_to_row(sample: Sample, root: PathLike) -> dict[str, Any]:
    """One dataset row of `manifest_to_dataset`; paths resolve against ``root``."""
    row = sample.to_dict()
    row.update(
        image=[sample.image] if isinstance(sample.image, str) else list(sample.image),
        images=[str(p) for p in sample.image_paths(root)],
        mask_path=None if sample.mask is None else str(sample.mask_path(root)),
        options=None if sample.options is None else json.dumps(sample.options, ensure_ascii=False),
        meta=json.dumps(sample.meta, ensure_ascii=False),
    )
    return {name: row.get(name) for name in _COLUMNS}


def row_to_sample(row: Mapping[str, Any]) -> Sample:
    """Turns a row of `manifest_to_dataset` back into the `Sample` (a one-item ``image`` list
    comes back as a single path)."""
    record = {k: row[k] for k in FIELDS if row.get(k) is not None}
    if len(record.get("image", ())) == 1:
        record["image"] = record["image"][0]
    if "options" in record:
        record["options"] = json.loads(record["options"])
    return Sample.from_dict({**record, **json.loads(row.get("meta") or "{}")})


def manifest_to_dataset(
    source: PathLike | Iterable[Sample],
    root: PathLike | None = None,
    check_files: bool = False,
) -> datasets.Dataset:
    """Builds a Hugging Face `datasets.Dataset` with one row per sample.

    Args:
        source: A manifest path, or samples already in memory.
        root: Folder that relative paths resolve against. Defaults to the manifest's folder,
            or to the working directory for samples in memory.
        check_files: For a manifest path, require every image and mask to exist.

    Returns:
        A dataset whose columns are the `Sample` fields plus ``images`` and ``mask_path``
        (absolute paths); see `dataset_features` and the comment above it for the types.
        `row_to_sample` inverts a row.
    """
    import datasets

    if isinstance(source, (str, os.PathLike)):
        root = Path(source).parent if root is None else root
        source = iter_manifest(source, check_files=check_files)
    root = Path.cwd() if root is None else root
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    for sample in source:
        for name, value in sample_to_row(sample, root).items():
            columns[name].append(value)
    return datasets.Dataset.from_dict(columns, features=dataset_features())


_COLUMNS = (
    "id", "image", "images", "modality", "anatomy", "question", "options", "answer",
    "answer_type", "box", "mask", "mask_path", "severity", "reasoning", "split", "source", "meta",
)  # fmt: skip

"""The `Sample` record: one question about one scan, one JSON object per manifest line.

A sample is validated when it is built, so a `Sample` that exists is a valid one. Every rule
raises a `SampleError` that names the field, what was expected and what was found:

    field 'box': expected 4 or 6 numbers in [0, 1], got [0.1, 0.2]

Example:
    >>> s = Sample.from_dict({"id": "q1", "image": "knee.nii.gz", "question": "Is there a tear?",
    ...                       "answer": "Yes", "answer_type": "closed", "site": "A"})
    >>> s.answer, s.meta
    ('yes', {'site': 'A'})
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSWER_TYPES = ("choice", "closed", "open", "grounding", "severity")

# The manifest keys, in the order `to_dict` writes them (the order of docs/architecture.md).
FIELDS = (
    "id", "image", "modality", "anatomy", "question", "options", "answer", "answer_type",
    "box", "mask", "severity", "reasoning", "split", "source",
)  # fmt: skip


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


# Marks a key absent from the record, which is not the same as an explicit JSON null.
MISSING: Any = _Missing()


class SampleError(ValueError):
    """A sample field breaks the `Sample` contract.

    Attributes:
        field: The manifest key at fault, e.g. ``"box"``.
        expected: What the contract asks for, in words.
        got: What was found, rendered as JSON (or a note such as ``nothing (key missing)``).
    """

    def __init__(self, field: str, expected: str, got: str):
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"field '{field}': expected {expected}, got {got}")

    def __reduce__(self):  # so errors survive pickling (multiprocessing workers)
        return type(self), (self.field, self.expected, self.got)


def show(value: Any, limit: int = 80) -> str:
    """Renders a value for an error message: as JSON, shortened to ``limit`` characters."""
    if value is MISSING:
        return "nothing (key missing)"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(name: str, expected: str, value: Any) -> SampleError:
    return SampleError(name, expected, show(value))


# --- one function per field: returns the normalised value or raises SampleError ------------


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _required_text(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not _is_text(value):
            raise _fail(name, "a non-empty string", value)
        return value

    return check


def _optional_text(name: str, default: str | None) -> Callable[[Any], str | None]:
    # modality/anatomy/source default to "" and may be empty; mask and split may not.
    expected = "a string" if default == "" else "a non-empty string"

    def check(value: Any) -> str | None:
        if value is MISSING or value is None:
            return default
        if not isinstance(value, str) or (default != "" and not value.strip()):
            raise _fail(name, expected, value)
        return value

    return check


def _check_image(value: Any) -> str | list[str]:
    if _is_text(value):
        return value
    if isinstance(value, (list, tuple)) and value and all(_is_text(p) for p in value):
        return list(value)
    raise _fail("image", "a path or a non-empty list of paths (relative to the manifest)", value)


def _check_options(value: Any) -> dict[str, str] | None:
    if value is MISSING or value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise _fail("options", "a non-empty object of letter -> text", value)
    letters = sorted(value, key=str)
    wanted = list(string.ascii_uppercase[: len(letters)])
    if letters != wanted:
        shown = ", ".join(wanted[:3]) + (", ..." if len(wanted) > 3 else "")
        expected = f"letters {shown} (one uppercase letter each, from A with no gaps)"
        raise _fail("options", expected, letters)
    for letter in letters:
        if not _is_text(value[letter]):
            raise _fail("options", f"a non-empty string for option {letter}", value[letter])
    return {letter: value[letter] for letter in letters}


def _check_answer_type(value: Any) -> str:
    if value not in ANSWER_TYPES:
        raise _fail("answer_type", "one of " + ", ".join(ANSWER_TYPES), value)
    return value


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` in a box is a data bug, not the number 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_box(value: Any) -> list[float] | None:
    if value is MISSING or value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) not in (4, 6)
        or not all(_is_number(v) and math.isfinite(v) and 0 <= v <= 1 for v in value)
    ):
        raise _fail("box", "4 or 6 numbers in [0, 1]", value)
    box = [float(v) for v in value]
    half = len(box) // 2
    if any(box[i] > box[i + half] for i in range(half)):
        corners = "[x1, y1, x2, y2]" if half == 2 else "[x1, y1, z1, x2, y2, z2]"
        raise _fail("box", f"corners {corners} with each min <= its max", value)
    return box


def _check_severity(value: Any) -> int | None:
    if value is MISSING or value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail("severity", "an integer >= 0", value)
    return value


def _check_reasoning(value: Any) -> list[str] | None:
    if value is MISSING or value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise _fail("reasoning", "a list of strings (one per step)", value)
    return list(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": _required_text("id"),
    "image": _check_image,
    "modality": _optional_text("modality", ""),
    "anatomy": _optional_text("anatomy", ""),
    "question": _required_text("question"),
    "options": _check_options,
    "answer": _required_text("answer"),
    "answer_type": _check_answer_type,
    "box": _check_box,
    "mask": _optional_text("mask", None),
    "severity": _check_severity,
    "reasoning": _check_reasoning,
    "split": _optional_text("split", "train"),
    "source": _optional_text("source", ""),
}


def _cross_check(v: dict[str, Any]) -> list[SampleError]:
    """Rules that tie fields together; normalises ``v["answer"]`` in place.

    Each rule runs only when the fields it reads passed their own checks, so one typo does not
    also produce a cascade of follow-on errors.
    """
    if "answer_type" not in v or "answer" not in v:
        return []
    kind, answer = v["answer_type"], v["answer"].strip()
    if kind == "choice" and "options" in v:
        if v["options"] is None:
            return [_fail("options", "letter -> text options for a choice question", MISSING)]
        if answer.upper() not in v["options"]:
            letters = ", ".join(v["options"])
            return [_fail("answer", f"one of the option letters {letters}", v["answer"])]
        v["answer"] = answer.upper()
    elif kind == "closed":
        if answer.lower() not in ("yes", "no"):
            return [_fail("answer", '"yes" or "no" for a closed question', v["answer"])]
        v["answer"] = answer.lower()
    elif kind == "grounding" and "box" in v and v["box"] is None:
        return [_fail("box", "a box for a grounding question", MISSING)]
    elif kind == "severity" and "severity" in v:
        if v["severity"] is None:
            return [_fail("severity", "an integer >= 0 for a severity question", MISSING)]
        if answer != str(v["severity"]):
            want = f'"{v["severity"]}" (the severity field, as a string)'
            return [_fail("answer", want, v["answer"])]
        v["answer"] = answer
    return []


def check_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[SampleError]]:
    """Checks every field and every cross-field rule, collecting all errors.

    Args:
        fields: Manifest keys to values; absent keys may be left out or given as `MISSING`.

    Returns:
        The normalised values of the fields that passed, and the errors of those that did not
        (in `FIELDS` order, cross-field errors last).
    """
    values: dict[str, Any] = {}
    errors: list[SampleError] = []
    for name, check in _CHECKS.items():
        try:
            values[name] = check(fields.get(name, MISSING))
        except SampleError as e:
            errors.append(e)
    return values, errors + _cross_check(values)


def check_record(record: Any) -> list[SampleError]:
    """Returns every contract violation in one manifest record (empty when it is valid)."""
    if not isinstance(record, Mapping):
        return [_fail("record", "a JSON object", record)]
    return check_fields(record)[1]


def resolve_path(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Resolves a manifest path against ``root`` (usually the manifest's folder).

    Absolute paths are kept. Symlinks are not followed, so a path into a cache of symlinks
    stays inside it.
    """
    return Path(os.path.abspath(Path(root).expanduser() / path))


@dataclass(kw_only=True)
class Sample:
    """One question about one scan: the record of a manifest line.

    Attributes:
        id: Unique within its manifest.
        image: A file, a DICOM series folder, or a list of files (slices or views), relative
            to the manifest; kept as written. `image_paths` resolves it.
        modality: E.g. ``"MRI"``, ``"CT"``, ``"X-ray"``, ``"fundus"``; may be empty.
        anatomy: E.g. ``"knee"``, ``"chest"``; may be empty.
        question: The question, without the options.
        options: Letter -> text for multiple choice: ``A``, ``B``, ... with no gaps.
        answer: The reference answer: an option letter for ``choice``, ``yes``/``no`` for
            ``closed``, the severity as a string for ``severity``, free text otherwise.
        answer_type: One of ``choice``, ``closed``, ``open``, ``grounding``, ``severity``.
        box: ``[x1, y1, x2, y2]`` or ``[x1, y1, z1, x2, y2, z2]``, normalised to [0, 1] with
            edges as corners (the whole image is ``[0, 0, 1, 1]``). Required for grounding.
        mask: Path of a segmentation mask, relative to the manifest.
        severity: Integer grade >= 0. Required for ``severity`` questions.
        reasoning: Reference reasoning, one string per step.
        split: ``train``, ``val``, ``test``, ...
        source: The dataset the sample comes from.
        meta: Every other key of the record; written back flat, so nothing is lost.

    Raises:
        SampleError: On construction, for the first field that breaks the contract.
    """

    id: str
    image: str | list[str]
    modality: str = ""
    anatomy: str = ""
    question: str
    options: dict[str, str] | None = None
    answer: str
    answer_type: str
    box: list[float] | None = None
    mask: str | None = None
    severity: int | None = None
    reasoning: list[str] | None = None
    split: str = "train"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks the contract again (after editing fields) and normalises the values.

        Raises:
            SampleError: For the first field that breaks the contract.
        """
        values, errors = check_fields({name: getattr(self, name) for name in FIELDS})
        if not isinstance(self.meta, Mapping):
            errors.append(_fail("meta", "an object of extra keys", self.meta))
        elif clash := sorted(set(self.meta) & set(FIELDS)):
            errors.append(_fail("meta", "keys that are not Sample fields", clash))
        if errors:
            raise errors[0]
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Sample:
        """Builds a sample from a manifest record; keys that are not fields go to `meta`.

        Raises:
            SampleError: For the first field that breaks the contract.
        """
        if not isinstance(record, Mapping):
            raise _fail("record", "a JSON object", record)
        known = {name: record.get(name, MISSING) for name in FIELDS}
        meta = {k: v for k, v in record.items() if k not in known}
        return cls(**known, meta=meta)

    def to_dict(self) -> dict[str, Any]:
        """The manifest record: fields in contract order, unset optional ones left out, then
        the `meta` keys, flat."""
        record: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, dict)):
                value = type(value)(value)  # a copy, so editing the record leaves self alone
            if value is not None:
                record[name] = value
        record.update(self.meta)
        return record

    def image_paths(self, root: str | os.PathLike) -> list[Path]:
        """The image as absolute paths, always a list, resolved against ``root`` (the
        manifest's folder)."""
        paths = [self.image] if isinstance(self.image, str) else self.image
        return [resolve_path(p, root) for p in paths]

    def mask_path(self, root: str | os.PathLike) -> Path | None:
        """The mask as an absolute path resolved against ``root``, or None."""
        return None if self.mask is None else resolve_path(self.mask, root)

"""Shared pieces of the dataset adapters: errors, the conversion report, and small helpers.

Every adapter is a generator of `Sample`s. Records it cannot convert are not dropped silently:
the adapter calls `ConvertReport.skip` with a short reason, which the report counts and shows
with a few example locations. Non-fatal problems (a mask left out, say) go to
`ConvertReport.note`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medvl._io import atomic_write_bytes
from medvl.data.sample import FIELDS, Sample, SampleError

logger = logging.getLogger("medvl.data.adapters")

EXAMPLES_PER_REASON = 3


class AdapterError(ValueError):
    """A dataset folder does not have the layout an adapter expects (or an option is wrong).

    The message names the file or folder that was expected and where the adapter looked.
    """


@dataclass
class ConvertReport:
    """What a conversion did: samples written, records skipped (by reason), notes.

    Attributes:
        format: The adapter name, e.g. ``"slake"``.
        src: The dataset folder.
        manifest: The manifest written, or None while converting in memory.
        written: Samples that made it into the manifest.
        skipped: Reason -> number of records left out for that reason.
        notes: Reason -> number of samples kept despite a non-fatal problem.
        examples: Reason -> the first few locations (``file: record``) it happened at.
        counts: ``split`` and ``answer_type`` -> value -> number of samples written.
    """

    format: str
    src: str
    manifest: str | None = None
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {"split": Counter(), "answer_type": Counter()}
    )

    def skip(self, reason: str, where: str = "") -> None:
        """Counts one record left out for ``reason`` (logged the first time it occurs)."""
        self._count(self.skipped, reason, where, "skipped")

    def note(self, reason: str, where: str = "") -> None:
        """Counts one sample kept despite ``reason`` (logged the first time it occurs)."""
        self._count(self.notes, reason, where, "note")

    def add(self, sample: Sample) -> None:
        """Counts one sample written."""
        self.written += 1
        self.counts["split"][sample.split] += 1
        self.counts["answer_type"][sample.answer_type] += 1

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def _count(self, counter: Counter[str], reason: str, where: str, kind: str) -> None:
        if counter[reason] == 0:
            logger.warning(
                "%s: %s: %s%s", self.format, kind, reason, f" ({where})" if where else ""
            )
        counter[reason] += 1
        seen = self.examples.setdefault(reason, [])
        if where and len(seen) < EXAMPLES_PER_REASON:
            seen.append(where)

    def summary(self) -> str:
        """A short human-readable report, as ``medvl data convert`` prints it."""
        target = f" -> {self.manifest}" if self.manifest else ""
        lines = [f"{self.format}: {self.src}{target}"]
        lines.append(f"  written {self.written} samples, skipped {self.total_skipped} records")
        for key, counter in self.counts.items():
            if counter:
                lines.append(f"  {key}: " + ", ".join(f"{v} {n}" for v, n in counter.most_common()))
        for title, counter in (("skipped", self.skipped), ("notes", self.notes)):
            if counter:
                lines.append(f"  {title}:")
                for reason, n in counter.most_common():
                    shown = "; ".join(self.examples.get(reason, []))
                    lines.append(f"    {n:>6}  {reason}" + (f"  (e.g. {shown})" if shown else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --- building samples --------------------------------------------------------------------


def make_sample(report: ConvertReport, where: str, **fields: Any) -> Sample | None:
    """Builds a `Sample`, or counts a skip naming the broken field and returns None."""
    try:
        return Sample(**fields)
    except SampleError as e:
        report.skip(f"invalid {e.field}: expected {e.expected}", f"{where}: got {e.got}")
        return None


def extra_meta(
    record: Mapping[str, Any], used: Iterable[str], prefix: str = "orig_"
) -> dict[str, Any]:
    """The keys of ``record`` not in ``used``, made JSON-safe, for a sample's `meta`.

    Keys that collide with a `Sample` field get ``prefix``, so a dataset's own
    ``answer_type`` survives as ``orig_answer_type``.
    """
    used = set(used)
    meta = {}
    for key, value in record.items():
        if key in used:
            continue
        name = str(key)
        meta[prefix + name if name in FIELDS else name] = json_safe(value)
    return meta


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, tuples as lists and numpy scalars as Python ones."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def text(value: Any) -> str:
    """A record value as stripped text; None and NaN become ``""``, numbers their string."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value).strip()


# Yes/no spellings that datasets use for closed answers, SLAKE's Chinese ones included: "is"
# (是/是的/对), "has" (有) and "exists" (存在), and their negations.
YES_NO = {
    "yes": "yes", "no": "no", "true": "yes", "false": "no",
    "是": "yes", "是的": "yes", "对": "yes", "有": "yes", "存在": "yes",
    "否": "no", "不是": "no", "不对": "no", "没有": "no", "无": "no", "不存在": "no",
}  # fmt: skip


def yes_no(answer: str) -> str | None:
    """``"yes"``/``"no"`` for a yes/no answer in any case (``"Yes."``, ``"是的。"`` too), else
    None."""
    return YES_NO.get(answer.strip().rstrip(".。！!").strip().lower())


# --- splits and files --------------------------------------------------------------------

SPLIT_ALIASES = {"validation": "val", "valid": "val", "validate": "val", "dev": "val"}


def norm_split(split: str | None) -> str | None:
    """Lower-case split name with the usual aliases folded (``validation`` -> ``val``)."""
    if split is None:
        return None
    name = split.strip().lower()
    return SPLIT_ALIASES.get(name, name)


def check_split(split: str | None, available: Mapping[str, Any], what: str, src: Path) -> None:
    """Raises `AdapterError` when ``split`` is not one of ``available`` (its files)."""
    if split is not None and split not in available:
        raise AdapterError(
            f"split {split!r} not available: expected {what} for it in {src} "
            f"(found splits: {', '.join(sorted(available)) or 'none'})"
        )


def require_dir(src: str | os.PathLike) -> Path:
    """``src`` as an absolute folder path, or `AdapterError` when it is not a folder."""
    path = Path(src).expanduser().absolute()
    if not path.is_dir():
        raise AdapterError(f"dataset folder not found: {path}")
    return path


def missing_layout(name: str, expected: str, src: Path, hint: str = "") -> AdapterError:
    """The wrong-layout error: which file was expected and where the adapter looked."""
    message = f"not a {name} folder: expected {expected} in {src}"
    return AdapterError(message + (f" ({hint})" if hint else ""))


def relpath(path: Path, out_dir: Path) -> str:
    """``path`` relative to the manifest folder, with forward slashes."""
    return Path(os.path.relpath(path, out_dir)).as_posix()


def load_json(path: Path) -> Any:
    """A JSON file (UTF-8, BOM tolerated), or a JSON Lines file when the name ends .jsonl."""
    raw = path.read_text(encoding="utf-8-sig")
    lines = enumerate(raw.splitlines(), 1) if path.suffix == ".jsonl" else [(1, raw)]
    out = []
    for number, chunk in lines:
        try:
            if chunk.strip():
                out.append(json.loads(chunk))
        except json.JSONDecodeError as e:
            line = number if path.suffix == ".jsonl" else e.lineno
            raise AdapterError(f"{path}: invalid JSON at line {line}: {e.msg}") from None
    return out if path.suffix == ".jsonl" else (out[0] if out else None)


def load_records(path: Path) -> list[Any]:
    """A JSON (or JSON Lines) file that must hold a list of records."""
    data = load_json(path)
    if not isinstance(data, list):
        raise AdapterError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def progress(items: Iterable[Any], desc: str, total: int | None = None) -> Iterator[Any]:
    """Wraps ``items`` in a tqdm bar; quiet when stderr is not a terminal (tests, logs)."""
    return iter(tqdm(items, desc=desc, total=total, disable=None, leave=False))


# --- embedded images ---------------------------------------------------------------------

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.I)
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}


def decode_base64_image(value: str) -> bytes | None:
    """The image bytes of a base64 string (a ``data:`` URL prefix allowed), or None."""
    payload = _DATA_URL.sub("", value.strip())
    if len(payload) < 16:
        return None
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return None


def save_image_bytes(data: bytes, images_dir: Path) -> Path | None:
    """Writes image bytes under ``images_dir`` named by their hash; None if not an image.

    Content-addressed names make a rerun idempotent and store an image shared by many
    questions (PathVQA, MM-Retinal-Reason) once.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
    except (UnidentifiedImageError, OSError):
        return None
    path = images_dir / (hashlib.sha1(data).hexdigest()[:20] + _EXTENSIONS.get(kind, ".img"))
    if not path.exists():
        atomic_write_bytes(path, data)  # never a half-written image under the final name
    return path

"""Reading prediction files: the JSONL that `medvl.eval.runner.evaluate` appends, one per model.

The one reader behind resuming an evaluation, the report, the quickstart and the notebooks.
A run killed mid-write leaves a truncated last line: it is dropped with a warning (and, with
``repair=True``, cut from the file so appending goes on cleanly). Damage anywhere else is an
error that names the file and the line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PredictionFileError", "read_predictions"]


class PredictionFileError(ValueError):
    """A prediction file that cannot be read; the message names the file and the line."""


def read_predictions(
    path: str | os.PathLike, repair: bool = False, required: Sequence[str] = ("id",)
) -> list[dict[str, Any]]:
    """The prediction records of ``path``, in file order (empty when the file does not exist).

    Blank lines are skipped; a repeated id keeps its first record (with a warning).

    Args:
        path: A prediction JSONL file.
        repair: Also cut a truncated last line from the file, and end a complete last line
            that lacks its newline, so that appending continues cleanly.
        required: Keys every record must have.

    Raises:
        PredictionFileError: A line other than the last is not JSON, a record is not an object,
            lacks a required key, or has ``correct`` other than true, false or null.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PredictionFileError(f"{path}: cannot read prediction file ({e})") from e
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    seen: set[Any] = set()
    duplicates = 0
    offset = 0  # byte offset just past the last good line
    for i, line in enumerate(lines):
        end = min(offset + len(line) + 1, len(data))
        if not line.strip():
            offset = end
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            if i != last:
                where = f"{path}:{i + 1}"
                raise PredictionFileError(f"{where}: damaged line, invalid JSON ({e})") from e
            warnings.warn(
                f"{path}:{i + 1}: dropping a truncated last line (an interrupted run?); its "
                "sample will be answered again by a resumed evaluation",
                RuntimeWarning,
                stacklevel=2,
            )
            if repair:
                with path.open("r+b") as f:
                    f.truncate(offset)
            break
        _check(record, required, f"{path}:{i + 1}")
        key = json.dumps(record["id"], sort_keys=True)
        if key in seen:
            duplicates += 1
        else:
            seen.add(key)
            records.append(record)
        offset = end
    else:
        if repair and data and not data.endswith(b"\n"):
            with path.open("ab") as f:
                f.write(b"\n")
    if duplicates:
        warnings.warn(f"{path}: {duplicates} repeated id(s), first record kept", stacklevel=2)
    return records


def _check(record: Any, required: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise PredictionFileError(f"{where}: damaged line, expected a JSON object")
    missing = [k for k in dict.fromkeys(("id", *required)) if k not in record]
    if missing:
        raise PredictionFileError(f"{where}: missing required key(s) {', '.join(missing)}")
    correct = record.get("correct")
    if correct is not None and not isinstance(correct, bool):
        raise PredictionFileError(
            f"{where}: 'correct' must be true, false or null, got {correct!r}"
        )

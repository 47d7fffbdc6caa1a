"""Atomic writes: a reader sees the old file (or folder) or the new one, whole, never half.

Every file medvl writes for someone else to read (configs, manifests, reports, head weights,
checkpoints, cached example scans, tiny builds) goes through here, so a crash or a full disk
leaves the previous version in place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "swap_in"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` to fill a temporary file beside ``path``, then renames it into place.

    The temporary name ends with ``path``'s suffixes (``.nii.gz``, ``.png``), so writers that
    choose a format by extension pick the right one. The file is created with the permissions
    the umask allows (not ``mkstemp``'s private 0600: manifests and reports are meant to be
    shared) and flushed to disk before the rename.

    Args:
        path: Destination; its folder is created if needed.
        write: Fills the file at the path it is given. If it raises, the temporary file is
            removed and ``path`` is left as it was.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{''.join(path.suffixes)}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; see `atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; see `atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def swap_in(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Renames the finished folder ``tmp`` to ``final``.

    An existing ``final`` (a rerun of the same checkpoint step, a forced rebuild) is first moved
    aside to a hidden folder beside it and deleted once the new one is in place, so ``final``
    names a complete folder at every moment but one rename.

    Raises:
        OSError: The rename failed (e.g. another process put a folder at ``final`` meanwhile);
            ``tmp`` is then left where it was, for the caller to keep or delete.
    """
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flushes a folder's entries, which makes a rename inside it durable (POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

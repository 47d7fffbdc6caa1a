"""Uploaded files -> one path ``load_scan`` reads: a file, or a folder holding a DICOM series.

A series arrives as several files at once or as a ``.zip``. Zips are unpacked with guards: no
absolute paths, no ``..``, no links, at most ``max_files`` members and ``max_bytes`` unpacked
(counted as the bytes are written, not as the zip claims), so a hostile zip cannot write
outside the session's folder or fill the disk.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from medvl.scans import ScanError

MAX_FILES = 4096
MAX_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


def gather_upload(
    files: Sequence[str | Path],
    workdir: str | Path,
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """The path to load for what was uploaded.

    Args:
        files: The uploaded files (one scan file, one ``.zip``, or a series' files).
        workdir: This session's folder; a series is assembled in a new folder inside it.
        max_files, max_bytes: Limits on an unpacked zip.

    Returns:
        A copy in a new folder of ``workdir``, under a neutral name (uploads' names may carry a
        patient's name, and loaders log paths): the one file as ``scan`` with its suffixes;
        else the folder with the series' files (or, from a zip, the one folder holding its
        files, or its one file when it holds exactly one that is not DICOM, e.g. a NIfTI).
        The caller may delete the uploads.

    Raises:
        ScanError: Nothing uploaded, or a zip that is broken or breaks a guard.
    """
    paths = [Path(f) for f in files if f]
    if not paths:
        raise ScanError("nothing uploaded: give a scan file, a .zip of a DICOM series, or the "
                        "series' files together")  # fmt: skip
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(_new_folder(workdir))
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        unzip(paths[0], folder, max_files, max_bytes)
        members = [p for p in folder.rglob("*") if p.is_file()]
        if len(members) == 1 and not _looks_dicom(members[0]):
            return members[0]
        parents = {p.parent for p in members}  # a zip of a study folder: the folder inside
        return parents.pop() if len(parents) == 1 else folder
    if len(paths) == 1:
        gz = paths[0].name.lower().endswith(".nii.gz")
        single = folder / ("scan" + (".nii.gz" if gz else paths[0].suffix))
        shutil.copyfile(paths[0], single)
        return single
    for i, path in enumerate(paths):
        shutil.copyfile(path, folder / f"{i:05d}{path.suffix}")  # names dropped: they may be PHI
    return folder


def unzip(archive: str | Path, dest: str | Path, max_files: int, max_bytes: int) -> None:
    """Unpack ``archive`` into ``dest`` under the guards of this module's docstring.

    Raises:
        ScanError: A broken zip, or a member that is absolute, climbs out with ``..``, is a
            link, or makes the zip exceed ``max_files`` members or ``max_bytes`` unpacked.
    """
    archive, dest = Path(archive), Path(dest)
    name = archive.name
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > max_files:
                raise ScanError(f"{name}: {len(members)} files, more than the {max_files} allowed")
            written = 0
            for member in members:
                target = dest / _safe_name(member, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ScanError(f"{name}: unpacks to more than {max_bytes} bytes")
                        out.write(chunk)
    except zipfile.BadZipFile as e:
        raise ScanError(f"{name}: not a readable zip file ({e})") from e
    if not any(dest.rglob("*")):
        raise ScanError(f"{name}: the zip holds no files")


def _safe_name(member: zipfile.ZipInfo, archive: str) -> Path:
    path = PurePosixPath(member.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or member.filename.startswith(("/", "\\")):
        raise ScanError(f"{archive}: member {member.filename!r} would unpack outside its folder")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise ScanError(f"{archive}: member {member.filename!r} is a link; links are not unpacked")
    return Path(*path.parts)


def _new_folder(workdir: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="upload-", dir=workdir)


def _looks_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom", "")

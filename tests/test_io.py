"""medvl._io: the one atomic writer and folder swap."""

from __future__ import annotations

import os
import stat

import pytest

from medvl._io import atomic_write, atomic_write_bytes, atomic_write_text, swap_in


def test_atomic_write_text_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    assert atomic_write_text(path, "a: 1\n") == path
    atomic_write_text(path, "b: 2\n")
    assert path.read_text() == "b: 2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.jsonl"
    atomic_write_bytes(path, b"old\n")

    def half(tmp):
        tmp.write_text("half a li")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]


def test_the_writer_sees_the_destination_suffixes(tmp_path):
    # nibabel's to_filename and PIL's save choose the format from the extension.
    seen = []
    atomic_write(tmp_path / "brain.nii.gz", lambda tmp: seen.append(tmp.name) or tmp.touch())
    assert seen[0].endswith(".nii.gz") and seen[0].startswith(".brain.nii.gz.")


def test_files_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.md", "# report\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_swap_in_replaces_a_folder_and_leaves_nothing_aside(tmp_path):
    final = tmp_path / "checkpoint-10"
    for text in ("first", "second"):
        tmp = tmp_path / ".tmp-checkpoint-10"
        tmp.mkdir()
        (tmp / "state.json").write_text(text)
        swap_in(tmp, final)
    assert (final / "state.json").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-10"]


def test_swap_in_onto_a_folder_that_appears_meanwhile_raises(tmp_path, monkeypatch):
    tmp, final = tmp_path / "tmp", tmp_path / "final"
    tmp.mkdir()
    (tmp / "a").write_text("ours")
    real_replace = os.replace

    def racing_replace(src, dst):
        if os.fspath(src) == os.fspath(tmp):  # another process wins the race to ``final``
            final.mkdir()
            (final / "b").write_text("theirs")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)
    with pytest.raises(OSError):
        swap_in(tmp, final)
    assert (tmp / "a").read_text() == "ours" and (final / "b").read_text() == "theirs"

"""Uploads to one loadable path: a file, a series' files, a zip; hostile zips refused."""

from __future__ import annotations

import zipfile

import pytest

from medvl.demo.uploads import gather_upload
from medvl.scans import ScanError, load_scan


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_one_file_is_copied_under_a_neutral_name(knee, tmp_path) -> None:
    named = tmp_path / "DOE_JANE_knee.nii.gz"
    named.write_bytes(knee[1].read_bytes())
    got = gather_upload([named], tmp_path / "work")
    assert got.name == "scan.nii.gz" and got.parent.parent == tmp_path / "work"
    assert tuple(load_scan(got).shape) == tuple(load_scan(knee[1]).shape)


def test_a_series_as_files_or_as_a_zip_loads_as_the_folder_does(knee, tmp_path) -> None:
    series = sorted(p for p in knee[2].iterdir() if p.is_file())
    assert len(series) > 10
    reference = load_scan(knee[2])
    from_files = load_scan(gather_upload(series, tmp_path / "a"))
    archive = _zip(tmp_path / "series.zip", {f"study/{p.name}": p.read_bytes() for p in series})
    from_zip = load_scan(gather_upload([archive], tmp_path / "b"))
    for scan in (from_files, from_zip):
        assert scan.meta["format"] == "dicom-series" and scan.shape == reference.shape
        assert (scan.as_tensor() == reference.as_tensor()).all()


def test_a_zip_of_one_nifti_gives_that_file(knee, tmp_path) -> None:
    archive = _zip(tmp_path / "one.zip", {"deep/knee.nii.gz": knee[1].read_bytes()})
    got = gather_upload([archive], tmp_path / "work")
    assert got.name == "knee.nii.gz" and load_scan(got).shape == load_scan(knee[1]).shape


@pytest.mark.parametrize(
    ("members", "limits", "message"),
    [
        ({"../../escape.dcm": b"x"}, {}, "outside its folder"),
        ({"/etc/passwd2": b"x"}, {}, "outside its folder"),
        ({f"{i}.dcm": b"x" for i in range(5)}, {"max_files": 4}, "more than the 4 allowed"),
        ({"big.dcm": b"\0" * 5000}, {"max_bytes": 4096}, "more than 4096 bytes"),
    ],
)
def test_hostile_zips_are_refused(tmp_path, members, limits, message) -> None:
    archive = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(ScanError, match=message):
        gather_upload([archive], tmp_path / "work", **limits)
    assert not (tmp_path / "escape.dcm").exists() and not (tmp_path.parent / "escape.dcm").exists()


def test_a_link_in_a_zip_and_a_broken_zip_are_refused(tmp_path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("scan.dcm")
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ScanError, match="is a link"):
        gather_upload([archive], tmp_path / "work")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\3\4 not really")
    with pytest.raises(ScanError, match="not a readable zip"):
        gather_upload([broken], tmp_path / "work")
    with pytest.raises(ScanError, match="nothing uploaded"):
        gather_upload([], tmp_path / "work")

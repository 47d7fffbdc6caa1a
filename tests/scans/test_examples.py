"""The example scans: real files shipped by installed packages, found offline."""

from __future__ import annotations

import importlib.util

import pytest

from medvl.scans import ScanError, example_scan, example_scans, load_scan, unavailable_examples
from medvl.scans import examples as examples_module

ALWAYS = ("ct_small", "mr_small", "rtdose", "us_cine", "anatomical", "example4d")


def test_core_examples_ship_with_required_packages():
    found = example_scans()
    for name in ALWAYS:
        assert found[name].is_file(), name
    assert set(found) | set(unavailable_examples()) == set(examples_module.EXAMPLES)


@pytest.mark.parametrize(
    "name, shape, fmt",
    [
        ("ct_small", (1, 128, 128), "dicom"),
        ("mr_small", (1, 64, 64), "dicom"),
        ("rtdose", (1, 10, 10, 15), "dicom"),
        ("anatomical", (1, 33, 41, 25), "nifti"),
    ],
)
def test_examples_load(name, shape, fmt):
    scan = load_scan(example_scan(name))
    assert tuple(scan.shape) == shape and scan.meta["format"] == fmt


def test_retina_png_goes_to_medvl_cache(tmp_path, monkeypatch):
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image is not installed")
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path))
    path = example_scan("retina")
    assert path == tmp_path / "examples" / "retina.png" and path.is_file()
    assert example_scan("retina") == path  # cached
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_missing_optional_package_is_reported(monkeypatch):
    real = importlib.util.find_spec

    def no_extras(name, *args):
        return None if name in ("nilearn", "skimage") else real(name, *args)

    monkeypatch.setattr(examples_module, "find_spec", no_extras)
    monkeypatch.setenv("MEDVL_CACHE", "/nonexistent-medvl-cache")
    missing = unavailable_examples()
    assert set(missing) == {"mni152", "retina"}
    assert "nilearn is not installed" in missing["mni152"]
    assert "medvl[examples]" in missing["retina"]
    assert not set(missing) & set(example_scans())
    with pytest.raises(ScanError, match="example 'mni152' is not available offline: nilearn"):
        example_scan("mni152")


def test_unknown_example():
    with pytest.raises(ScanError, match="unknown example 'brain'; known: ct_small"):
        example_scan("brain")

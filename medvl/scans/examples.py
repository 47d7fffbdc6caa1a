"""Small real scans that installed packages ship, for tests, docs and the quickstart.

Nothing here downloads: every example is a file inside an installed wheel (pydicom, nibabel,
and the optional extras nilearn and scikit-image), or a PNG converted once from one into the
cache folder ``$MEDVL_CACHE/examples`` (default ``~/.cache/medvl/examples``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from medvl._io import atomic_write
from medvl.scans.errors import ScanError

__all__ = ["EXAMPLES", "cache_dir", "example_scan", "example_scans", "unavailable_examples"]

logger = logging.getLogger(__name__)

_EXTRA = "pip install 'medvl[examples]'"

#: Example name -> what it is.
EXAMPLES: dict[str, str] = {
    "ct_small": "pydicom CT_small.dcm: one 128x128 CT slice (2D), HU via RescaleIntercept",
    "mr_small": "pydicom MR_small.dcm: one 64x64 MR slice (2D)",
    "rtdose": "pydicom rtdose.dcm: multi-frame RT dose grid, 15 frames of 10x10 (3D), Gy",
    "us_cine": "pydicom examples_ybr_color.dcm: multi-frame colour ultrasound, 30 frames (3D RGB)",
    "anatomical": "nibabel tests/data/anatomical.nii: a 33x41x25 structural MRI, 2 mm",
    "example4d": "nibabel tests/data/example4d.nii.gz: a 4D fMRI run, 2 volumes of 128x96x24",
    "mni152": "nilearn MNI152 T1 template (ICBM 2009a sym), 197x233x189 at 1 mm (extra)",
    "retina": "scikit-image retina(): 1411x1411 RGB fundus photograph, as PNG (extra)",
}


class _Unavailable(Exception):
    """Why one example cannot be provided offline."""


def cache_dir() -> Path:
    """Folder for converted examples: ``$MEDVL_CACHE/examples``, default ``~/.cache/medvl``."""
    root = os.environ.get("MEDVL_CACHE") or Path.home() / ".cache" / "medvl"
    return Path(root).expanduser() / "examples"


def example_scan(name: str) -> Path:
    """Path of one example scan.

    Args:
        name: a key of :data:`EXAMPLES`.

    Raises:
        ScanError: unknown name, or the example is not available offline here (the message
            says why, e.g. an optional package is missing, and how to get it).
    """
    if name not in _RESOLVERS:
        raise ScanError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    try:
        return _RESOLVERS[name]()
    except _Unavailable as e:
        raise ScanError(f"example {name!r} is not available offline: {e}") from None


def example_scans() -> dict[str, Path]:
    """Paths of the example scans available offline, by name (see :data:`EXAMPLES`).

    Unavailable ones are left out and logged; :func:`unavailable_examples` says why.

    Example:
        >>> from medvl.scans import example_scans, load_scan
        >>> mr = load_scan(example_scans()["anatomical"])
        >>> tuple(mr.shape), mr.meta["orientation"]
        ((1, 33, 41, 25), 'RAS')
    """
    found = {}
    for name, resolve in _RESOLVERS.items():
        try:
            found[name] = resolve()
        except _Unavailable as e:
            logger.info("example %r unavailable: %s", name, e)
    return found


def unavailable_examples() -> dict[str, str]:
    """Examples that cannot be provided offline here, with the reason for each."""
    missing = {}
    for name, resolve in _RESOLVERS.items():
        try:
            resolve()
        except _Unavailable as e:
            missing[name] = str(e)
    return missing


def _package_dir(package: str, extra: bool) -> Path:
    spec = find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise _Unavailable(f"{package} is not installed" + (f" ({_EXTRA})" if extra else ""))
    return Path(next(iter(spec.submodule_search_locations)))


def _pydicom(filename: str) -> Callable[[], Path]:
    def resolve() -> Path:
        from pydicom.data import get_testdata_file

        # download=False: pydicom fetches its larger test files from GitHub otherwise.
        found = get_testdata_file(filename, download=False)
        if not found:
            raise _Unavailable(f"{filename} is not in the installed pydicom")
        return Path(found)

    return resolve


def _nibabel(filename: str) -> Callable[[], Path]:
    def resolve() -> Path:
        # nibabel.testing.data_path names the same folder, but importing it needs pytest.
        path = _package_dir("nibabel", extra=False) / "tests" / "data" / filename
        if not path.is_file():
            raise _Unavailable(f"{filename} is not in the installed nibabel's tests/data")
        return path

    return resolve


def _mni152() -> Path:
    # The file nilearn.datasets.load_mni152_template() reads (it then rescales to [0, 1]).
    path = (
        _package_dir("nilearn", extra=True)
        / "datasets"
        / "data"
        / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )
    if path.is_file():
        return path
    cached = cache_dir() / "mni152_t1_1mm.nii.gz"
    if not cached.is_file():  # another nilearn layout: save what the offline loader returns
        try:
            from nilearn.datasets import load_mni152_template

            image = load_mni152_template(resolution=1)
        except Exception as e:
            raise _Unavailable(f"nilearn could not load its MNI152 template offline: {e}") from e
        atomic_write(cached, lambda p: image.to_filename(str(p)))
    return cached


def _retina() -> Path:
    cached = cache_dir() / "retina.png"
    if cached.is_file():
        return cached
    # skimage.data.retina() reads this bundled file; were it missing, it would download it.
    source = _package_dir("skimage", extra=True) / "data" / "retina.jpg"
    if not source.is_file():
        raise _Unavailable(
            "this scikit-image does not bundle data/retina.jpg, and "
            "skimage.data.retina() would download it"
        )
    from PIL import Image

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    atomic_write(cached, lambda p: rgb.save(p, format="PNG"))
    return cached


_RESOLVERS: dict[str, Callable[[], Path]] = {
    "ct_small": _pydicom("CT_small.dcm"),
    "mr_small": _pydicom("MR_small.dcm"),
    "rtdose": _pydicom("rtdose.dcm"),
    "us_cine": _pydicom("examples_ybr_color.dcm"),
    "anatomical": _nibabel("anatomical.nii"),
    "example4d": _nibabel("example4d.nii.gz"),
    "mni152": _mni152,
    "retina": _retina,
}

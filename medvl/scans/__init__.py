"""Scans: DICOM (file or series folder), NIfTI, PNG/JPEG into MONAI MetaTensors.

3D scans come out RAS-oriented with their voxel->world affine; 2D images as displayed, with
axis 0 the x (columns) and axis 1 the y (rows) axis. See :func:`load_scan` for the contract.
"""

from medvl.scans.errors import ScanError
from medvl.scans.examples import example_scan, example_scans, unavailable_examples
from medvl.scans.loading import META_KEYS, SUPPORTED_EXTENSIONS, load_scan

__all__ = [
    "META_KEYS",
    "SUPPORTED_EXTENSIONS",
    "ScanError",
    "example_scan",
    "example_scans",
    "load_scan",
    "unavailable_examples",
]

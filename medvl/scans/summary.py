"""A short, identifier-free description of a scan, for ``medvl info`` and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.scans.loading import load_scan


def scan_summary(path: str | Path, modality: str | None = None) -> dict[str, Any]:
    """Load a scan and describe it.

    Only fields of ``load_scan``'s whitelisted meta are reported, so no patient identifier can
    reach the output.

    Args:
        path: a DICOM file or series folder, a NIfTI file, or a PNG/JPG image.
        modality: overrides the modality read from the file.

    Returns:
        An ordered dict: source, format, modality, channels, shape, spacing_mm, orientation,
        value_range, study_year.

    Raises:
        medvl.scans.ScanError: if the scan cannot be read.
    """
    scan = load_scan(path, modality=modality)
    meta = scan.meta
    spacing = tuple(round(float(s), 4) for s in meta["spacing"])
    return {
        "source": str(meta["source"]),
        "format": meta["format"],
        "modality": meta["modality"],
        "channels": int(scan.shape[0]),
        "shape": list(scan.shape[1:]),
        "spacing_mm": list(spacing),
        "orientation": meta.get("orientation"),
        "value_range": [round(float(scan.min()), 4), round(float(scan.max()), 4)],
        "study_year": meta.get("study_year"),
    }

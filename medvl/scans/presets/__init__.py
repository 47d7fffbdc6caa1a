"""Modality presets: MONAI ``Compose`` pipelines for the MetaTensors ``load_scan`` returns.

Each preset is a function whose keyword arguments override its defaults and which returns a
``Compose`` of MONAI array transforms: ``preset(load_scan(path))`` gives intensities in [0, 1]
with the meta and affine kept consistent (``meta["spacing"]`` follows the affine after any
resampling, resize, crop or pad; ``meta["window"]``, spent, becomes None). The docstrings
say where each number comes from.

==============  ========================================================================
``knee_mri``    percentiles 0.5/99.5 -> [0, 1], 0.5 mm in plane (thick slices kept),
                foreground crop
``brain_mri``   RAS, percentiles 0.5/99.5 -> [0, 1], 1 mm isotropic, foreground crop
``ct``          HU windows (soft tissue W400/L50, lung W1500/L-600, bone W1800/L400...)
                -> [0, 1], several as channels, optional resampling
``chest_xray``  DICOM VOI window (else percentiles) -> [0, 1], longer side 512
``fundus``      crop to the circular field of view, mask outside it, longer side 512,
                padded square
==============  ========================================================================

Example:
    >>> from medvl.scans import example_scan, load_scan
    >>> from medvl.scans.presets import get_preset
    >>> image = get_preset("ct", window=("soft_tissue", "lung", "bone"))(
    ...     load_scan(example_scan("ct_small")))
    >>> tuple(image.shape), float(image.min()) >= 0, float(image.max()) <= 1
    ((3, 128, 128), True, True)

For dictionaries (``{"image": scan, ...}``, as MONAI datasets pass them), wrap a preset with
:func:`as_dict_transform`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from monai.transforms import Compose, Lambdad

from medvl.scans.presets.modalities import brain_mri, chest_xray, ct, fundus, knee_mri
from medvl.scans.presets.transforms import (
    CT_WINDOWS,
    AnisotropicSpacing,
    FieldOfViewMask,
    ForegroundAbove,
    MaskOutsideCircle,
    OnVolumes,
    ScaleWindows,
    ScaleWithDicomWindow,
    SyncMeta,
    Window,
    WindowSpec,
    parse_windows,
)

__all__ = [
    "CT_WINDOWS",
    "PRESETS",
    "AnisotropicSpacing",
    "FieldOfViewMask",
    "ForegroundAbove",
    "MaskOutsideCircle",
    "OnVolumes",
    "ScaleWindows",
    "ScaleWithDicomWindow",
    "SyncMeta",
    "Window",
    "WindowSpec",
    "as_dict_transform",
    "brain_mri",
    "chest_xray",
    "ct",
    "fundus",
    "get_preset",
    "knee_mri",
    "parse_windows",
]

#: Preset name -> the function building it (configs name presets by these keys).
PRESETS: dict[str, Callable[..., Compose]] = {
    "knee_mri": knee_mri,
    "brain_mri": brain_mri,
    "ct": ct,
    "chest_xray": chest_xray,
    "fundus": fundus,
}


def get_preset(name: str, **overrides) -> Compose:
    """Build the preset ``name`` with its defaults, overridden by ``overrides``.

    Args:
        name: a key of :data:`PRESETS`.
        **overrides: keyword arguments of that preset's function.

    Raises:
        ValueError: an unknown name, or an argument the preset does not take (the message
            lists the known names).

    Example:
        >>> get_preset("chest_xray", size=256, pad_to_square=True)  # doctest: +ELLIPSIS
        <monai.transforms.compose.Compose object at ...>
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    try:
        return PRESETS[name](**overrides)
    except TypeError as e:  # an unexpected keyword: say which preset and what it takes
        raise ValueError(f"preset {name!r}: {e}") from e


def as_dict_transform(
    preset: Callable,
    keys: Hashable | Sequence[Hashable] = ("image",),
    allow_missing_keys: bool = False,
) -> Lambdad:
    """Apply ``preset`` to the ``keys`` of a data dictionary (MONAI ``Lambdad``).

    Args:
        preset: a preset (or any array transform).
        keys: the dictionary keys holding the scans.
        allow_missing_keys: skip keys the dictionary lacks instead of raising KeyError.

    Returns:
        A MONAI dictionary transform: ``{"image": scan, ...} -> {"image": preset(scan), ...}``,
        other keys untouched. Like the preset it pickles, for DataLoader workers.

    Example:
        >>> from medvl.scans.presets import as_dict_transform, ct
        >>> transform = as_dict_transform(ct(), keys=("image",))
    """
    return Lambdad(keys=keys, func=preset, allow_missing_keys=allow_missing_keys)

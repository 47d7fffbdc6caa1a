"""How a volume is shown to a model: the one `ViewSettings` type and the one `show_volume`.

The dataset config, the prompt settings and a saved model's config all inherit `ViewSettings`,
so the four fields are declared once, validated once, and copied with one call
(`ViewSettings.set_view`) from the data a model was trained on into the model that answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from medvl.scans.views.coords import Orientation
from medvl.scans.views.planar import MIPView, SliceView, volume_to_mip, volume_to_slice
from medvl.scans.views.stack import FrameView, MontageView, volume_to_frames, volume_to_montage

__all__ = ["VIEWS", "ViewName", "ViewSettings", "show_volume"]

ViewName = Literal["frames", "montage", "slice", "mip"]
VIEWS: tuple[str, ...] = ("frames", "montage", "slice", "mip")
_FIELDS = ("view", "n_frames", "axis", "size")


@dataclass
class ViewSettings:
    """How a 3D scan becomes what the model sees (a 2D scan is always one picture).

    Attributes:
        view: ``"frames"`` (a video of slices), ``"montage"`` (slices tiled into one image),
            ``"slice"`` (the middle slice) or ``"mip"`` (a maximum intensity projection).
        n_frames: Frames of a video, or tiles of a montage; even for frames (Qwen-VL merges
            frames in pairs).
        axis: RAS axis the slices step along (0 sagittal, 1 coronal, 2 axial).
        size: Longest side in pixels of each frame / tile / picture; None keeps the scan's
            resolution at the finer in-plane spacing.

    Raises:
        ValueError: At construction, for a value outside those ranges (the field named).
    """

    view: ViewName = "frames"
    n_frames: int = 16
    axis: int = 2
    size: int | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}; got {self.view!r}")
        if self.view == "frames" and (self.n_frames < 2 or self.n_frames % 2):
            raise ValueError(f"n_frames must be even and >= 2 for frames, got {self.n_frames}")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {self.axis!r}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be None or >= 1, got {self.size}")

    @property
    def view_settings(self) -> ViewSettings:
        """Just the view fields, as a plain `ViewSettings` (of a subclass, too)."""
        return ViewSettings(**{name: getattr(self, name) for name in _FIELDS})

    def set_view(self, other: ViewSettings) -> None:
        """Takes ``other``'s view fields (e.g. a model config from its training data's)."""
        for name in _FIELDS:
            setattr(self, name, getattr(other, name))


def show_volume(
    volume: torch.Tensor | np.ndarray,
    settings: ViewSettings,
    *,
    spacing: Sequence[float] | None = None,
    orientation: Orientation = "radiological",
    window: tuple[float, float] | None = None,
) -> FrameView | MontageView | SliceView | MIPView:
    """The view ``settings`` name, of a ``(C, X, Y, Z)`` volume; see `medvl.scans.views`.

    Args:
        volume: The volume (a MetaTensor's spacing is used unless ``spacing`` is given).
        settings: Which view, how many frames, along which axis, at what size.
        spacing: Voxel spacing in mm (overrides the volume's).
        orientation: ``"radiological"``, ``"neurological"`` or ``"array"``.
        window: Intensity ``(low, high)`` shown black to white; None: 0.5/99.5 percentiles.
    """
    s = settings
    common = {"spacing": spacing, "size": s.size, "orientation": orientation, "window": window}
    if s.view == "frames":
        return volume_to_frames(volume, s.n_frames, s.axis, **common)
    if s.view == "montage":
        return volume_to_montage(volume, s.n_frames, s.axis, **common)
    if s.view == "slice":
        return volume_to_slice(volume, None, s.axis, **common)
    return volume_to_mip(volume, s.axis, **common)

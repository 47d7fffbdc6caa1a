"""Deterministic scan preprocessing for datasets: a MONAI dict pipeline and its caches.

One pipeline turns a record ``{"image": path, "mask": path}`` (``image_1``, ``image_2``... for
a sample with several images) into preprocessed tensors::

    LoadScand(image*, mask)          load_scan: RAS MetaTensors, PHI-free meta
    AlignMaskd(mask -> image)        a mask on the image's voxel grid shares its affine
    preset on image*                 e.g. knee_mri: scale, resample, crop (array Compose)
    ResampleToMatchd(mask, nearest)  the mask follows the image through any spatial step
    PackScand(image*, mask)          plain tensors + plain meta dicts, cacheable

The mask is not pushed through the preset itself: a preset's crop chooses its box from the
image (``CropForeground``) and its intensity steps make no sense on labels. Instead, every
MONAI spatial transform keeps the image's affine up to date, so resampling the mask onto the
final image grid with nearest interpolation (MONAI ``ResampleToMatchd``, ``mode="nearest"``)
reproduces whatever crop, pad, spacing or resize the preset did, without mixing labels.

Everything here is deterministic, so MONAI's ``PersistentDataset`` (disk) or ``CacheDataset``
(memory) can store its output; rendering views (PIL) happens after the cache, in
:mod:`medvl.data.dataset`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor, PersistentDataset
from monai.data import Dataset as MonaiDataset
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import Compose, MapTransform, ResampleToMatchd, Transform
from monai.transforms.traits import RandomizableTrait

from medvl.data.sample import Sample
from medvl.scans.loading import load_scan

__all__ = [
    "IMAGE_KEY",
    "MASK_KEY",
    "AUTO_RULES",
    "AlignMaskd",
    "ApplyPresetd",
    "LoadScand",
    "PackScand",
    "auto_preset",
    "build_transform",
    "image_keys",
    "make_scan_dataset",
    "remap_box",
    "resolve_preset",
    "scan_records",
    "unpack",
]

IMAGE_KEY = "image"
MASK_KEY = "mask"
# Bump when the pipeline's output changes for the same preset, so old disk caches are not reused.
PIPELINE_VERSION = 1


def image_keys(count: int) -> list[str]:
    """Record keys of a sample's images: ``image``, ``image_1``, ``image_2``..."""
    return [IMAGE_KEY if k == 0 else f"{IMAGE_KEY}_{k}" for k in range(count)]


def meta_key(key: Hashable) -> str:
    """Where the plain meta dict of ``key`` lives in a record (``image`` -> ``image_meta``)."""
    return f"{key}_meta"


class LoadScand(MapTransform):
    """Load the scan at each key's path with :func:`medvl.scans.load_scan`.

    Why not MONAI's ``LoadImaged``: ``load_scan`` orders a DICOM series by slice position along
    the slice normal (not InstanceNumber, which scanners reuse and reorder), orients volumes to
    RAS and 2D images as displayed, keeps only a whitelist of PHI-free meta keys (LoadImaged
    copies the whole header -- patient name and id included -- into the meta, hence into any
    cache), and raises ``ScanError`` messages naming the file and the problem instead of a
    reader's traceback.

    Besides the scan, ``<key>_meta`` gets the loaded grid (``loaded_affine``, ``loaded_shape``)
    so that boxes can later be mapped through whatever crop or resampling follows.
    """

    def __init__(self, keys: Sequence[Hashable], allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scan = load_scan(d[key])
            d[meta_key(key)] = {
                "loaded_affine": scan.affine.clone(),
                "loaded_shape": tuple(int(n) for n in scan.shape[1:]),
            }
            d[key] = scan
        return d


class AlignMaskd(MapTransform):
    """Give a mask the affine of its image when both have the same voxel grid shape.

    Label PNGs carry no spacing, so a chest X-ray DICOM (1.4 mm pixels) and its label PNG
    (read as 1 mm) would otherwise disagree about where each pixel is. A mask of another shape
    keeps its own affine and is resampled by it (NIfTI masks on a different grid).
    """

    def __init__(self, mask_key: str = MASK_KEY, image_key: str = IMAGE_KEY) -> None:
        super().__init__([mask_key], allow_missing_keys=True)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image, mask = d[self.image_key], d[key]
            if tuple(mask.shape[1:]) == tuple(image.shape[1:]):
                mask.affine = image.affine.clone()
        return d


class PackScand(MapTransform):
    """MetaTensors -> plain tensors, their meta -> ``<key>_meta`` dicts of plain values.

    Plain tensors and primitives are what ``torch.load(weights_only=True)`` accepts, so
    MONAI's PersistentDataset reads the cache without unpickling arbitrary objects (a
    MetaTensor's trace holds MONAI enums, which would need ``weights_only=False``).
    """

    def __init__(self, keys: Sequence[Hashable], allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scan = d[key]
            affine = scan.affine.to(torch.float64).clone()
            meta = {k: _plain(v) for k, v in scan.meta.items() if _is_plain(v)}
            meta.update(d.get(meta_key(key), {}))
            meta.update(
                affine=affine,
                spacing=tuple(float(s) for s in affine_to_spacing(affine, r=scan.ndim - 1)),
                spatial_shape=tuple(int(n) for n in scan.shape[1:]),
            )
            d[meta_key(key)] = meta
            d[key] = scan.as_tensor().contiguous()
        return d


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _is_plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool, type(None), Enum)):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(v) for v in value)


def unpack(item: Mapping[Hashable, Any], key: Hashable) -> MetaTensor | None:
    """The preprocessed scan at ``key`` as a MetaTensor (affine and meta restored), or None."""
    if key not in item:
        return None
    meta = {k: v for k, v in item[meta_key(key)].items() if k != "affine"}
    return MetaTensor(item[key], affine=item[meta_key(key)]["affine"], meta=meta)


class ApplyPresetd(MapTransform):
    """Apply the preset a record names (its ``preset`` key) to the image keys.

    Like ``medvl.scans.presets.as_dict_transform`` but with one preset per record, which is
    what ``preset="auto"`` needs for a manifest mixing knee MRI, chest X-rays and fundus
    photographs. A record whose preset is None (or absent) passes unchanged.

    Args:
        presets: preset name -> transform (an array transform on one scan).
        keys: the image keys.
    """

    def __init__(self, presets: Mapping[str, Callable], keys: Sequence[Hashable]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.presets = dict(presets)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = d.get("preset")
        if name is None:
            return d
        for key in self.key_iterator(d):
            d[key] = self.presets[name](d[key])
        return d


#: ``preset="auto"``: the first rule whose words all occur in a sample's lowercased modality
#: and anatomy picks the preset; no rule matching means no preset (scans as loaded).
AUTO_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ct",), "ct"),  # first: a knee or chest CT is CT before it is a knee or a chest
    (("fundus",), "fundus"),
    (("knee", "mri"), "knee_mri"),
    (("knee", "mr"), "knee_mri"),
    (("brain", "mri"), "brain_mri"),
    (("brain", "mr"), "brain_mri"),
    (("chest", "x-ray"), "chest_xray"),
    (("chest", "xray"), "chest_xray"),
    (("chest", "cxr"), "chest_xray"),
    (("chest", "cr"), "chest_xray"),
    (("chest", "dx"), "chest_xray"),
)


def auto_preset(sample: Sample) -> str | None:
    """The preset ``preset="auto"`` gives a sample (see :data:`AUTO_RULES`), or None."""
    words = set(f"{sample.modality} {sample.anatomy}".lower().replace("_", " ").split())
    for needed, name in AUTO_RULES:
        if all(w in words for w in needed):
            return name
    return None


def resolve_preset(
    preset: str | Callable | None,
    overrides: Mapping[str, Any] | None,
    samples: Sequence[Sample],
) -> tuple[dict[str, Callable], list[str | None], str, str]:
    """A config's preset -> ``(transforms by name, name per sample, label, fingerprint)``.

    The fingerprint names the preprocessing for the disk cache: for a named preset (or
    ``"auto"``), the name and overrides; for a transform object, a hash of its pickle
    (parameters included). With ``"auto"``, ``overrides`` maps preset names to their overrides.

    Raises:
        ValueError: an unknown preset name, overrides without a name, a custom preset that
            does not pickle, or a random transform (cached preprocessing must be
            deterministic).
    """
    overrides = dict(overrides or {})
    described: dict[str, Any] = {"preset": preset, "overrides": overrides}
    if preset is None:
        if overrides:
            raise ValueError(f"preset_overrides {overrides} given without a preset name")
        names, transforms, label = [None] * len(samples), {}, "raw"
    elif isinstance(preset, str):
        from medvl.scans.presets import get_preset

        names = [auto_preset(s) for s in samples] if preset == "auto" else [preset] * len(samples)
        if preset == "auto":
            transforms = {n: get_preset(n, **overrides.get(n, {})) for n in set(names) if n}
        else:
            transforms = {preset: get_preset(preset, **overrides)}
        label = preset
    else:
        if overrides:
            raise ValueError("preset_overrides only apply to a preset given by name")
        names, transforms, label = ["custom"] * len(samples), {"custom": preset}, "custom"
        # A Compose pickles its own unseeded RandomState, different in every process: hash
        # its steps instead, so that the same preset finds its cache again next run.
        steps = preset.flatten().transforms if isinstance(preset, Compose) else preset
        try:
            described = {"pickle": hashlib.sha256(pickle.dumps(steps)).hexdigest()}
        except Exception as e:  # lambdas, open files...: no safe way to tell two apart
            raise ValueError(
                f"a custom preset must pickle so that its cache key sees its parameters: {e}"
            ) from e
    for transform in transforms.values():
        steps = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
        if any(isinstance(t, RandomizableTrait) for t in steps):
            raise ValueError("the preset holds a random transform; caching needs it deterministic")
    text = json.dumps({"version": PIPELINE_VERSION, **described}, sort_keys=True, default=repr)
    return transforms, names, label, hashlib.sha256(text.encode()).hexdigest()


def build_transform(presets: Mapping[str, Callable], n_images: int = 1) -> Compose:
    """The preprocessing Compose for records with up to ``n_images`` images and a mask."""
    images = image_keys(n_images)
    steps: list[Transform] = [LoadScand([*images, MASK_KEY]), AlignMaskd()]
    if presets:
        steps.append(ApplyPresetd(presets, images))
    # Always: a mask on another grid than its image lands on the image's grid even without a
    # preset, and MONAI skips the resampling when the grids already agree.
    steps.append(
        ResampleToMatchd(
            MASK_KEY,
            key_dst=IMAGE_KEY,
            mode="nearest",
            dtype=torch.float32,
            allow_missing_keys=True,
        )
    )
    steps.append(PackScand([*images, MASK_KEY]))
    return Compose(steps)


def scan_records(
    samples: Sequence[Sample], root: str | os.PathLike, presets: Sequence[str | None]
) -> tuple[list[dict[str, Any]], list[int]]:
    """One record per scan (images and preset), and the record index of each sample.

    A manifest asks several questions about each scan (phantoms: 6-7); loading and caching
    it once per scan rather than per question saves that factor in time and cache size. The
    mask goes into the scan's record when every sample of the scan that has a mask names the
    same one (samples without a mask simply ignore it); a scan with several different masks
    gets one record per mask. Each record carries a ``stamp`` (size and mtime of each file):
    it is part of the cache key, so an edited file is not served stale from a disk cache.
    """
    keys = []
    masks: dict[tuple, set[str]] = {}
    for sample, preset in zip(samples, presets, strict=True):
        scan = (tuple(str(p) for p in sample.image_paths(root)), preset)
        mask = sample.mask_path(root)
        keys.append((scan, None if mask is None else str(mask)))
        masks.setdefault(scan, set())
        if mask is not None:
            masks[scan].add(str(mask))
    records: list[dict[str, Any]] = []
    index: dict[tuple, int] = {}
    which: list[int] = []
    for scan, mask in keys:
        if mask is None and len(masks[scan]) == 1:
            mask = next(iter(masks[scan]))  # share the record of the scan's only mask
        if (scan, mask) not in index:
            index[scan, mask] = len(records)
            records.append(_record(*scan, mask))
        which.append(index[scan, mask])
    return records, which


def _record(paths: tuple[str, ...], preset: str | None, mask: str | None) -> dict[str, Any]:
    record: dict[str, Any] = dict(zip(image_keys(len(paths)), paths, strict=True))
    if mask is not None:
        record[MASK_KEY] = mask
    record["preset"] = preset
    record["stamp"] = [_stamp(p) for p in [*paths, *([] if mask is None else [mask])]]
    return record


def _stamp(path: str | os.PathLike) -> list[int]:
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]  # missing: load_scan will say so, with the path
    return [st.st_size, st.st_mtime_ns]


def make_scan_dataset(
    records: Sequence[dict[str, Any]],
    transform: Compose,
    cache: str | None,
    cache_path: Path | None = None,
    workers: int = 0,
) -> MonaiDataset:
    """A MONAI dataset over ``records``: plain, ``CacheDataset`` or ``PersistentDataset``."""
    if cache is None:
        return MonaiDataset(records, transform)
    if cache == "memory":
        # Filled now, on ``workers`` threads (0 -> MONAI's one).
        return CacheDataset(records, transform, num_workers=workers or 1, progress=False)
    # weights_only=True: PackScand leaves only tensors and primitives (see its docstring).
    return PersistentDataset(records, transform, cache_dir=cache_path, weights_only=True)


def remap_box(
    box: Sequence[float],
    src_affine: torch.Tensor | np.ndarray,
    src_shape: Sequence[int],
    dst_affine: torch.Tensor | np.ndarray,
    dst_shape: Sequence[int],
) -> list[float]:
    """A normalised box on one voxel grid -> the same region, normalised on another grid.

    Both grids place the scan in world (mm) coordinates through their affines, which MONAI's
    spatial transforms keep up to date, so this follows any crop, pad, resampling, resize or
    flip. A normalised edge ``t`` sits at voxel coordinate ``t * n - 0.5`` (voxel centres on
    integers); the eight (or four) corners are mapped and their bounding box taken, clipped to
    the new grid.
    """
    r = len(src_shape)
    src = to_affine_nd(r, np.asarray(src_affine, dtype=np.float64))
    dst = to_affine_nd(r, np.asarray(dst_affine, dtype=np.float64))
    if tuple(src_shape) == tuple(dst_shape) and np.allclose(src, dst, atol=1e-6):
        return [float(v) for v in box]  # same grid: exact, no float round trip
    n_src, n_dst = np.asarray(src_shape, float), np.asarray(dst_shape, float)
    corners = np.array(list(itertools.product(*zip(box[:r], box[r:], strict=True))))
    voxels = corners * n_src - 0.5
    to_dst = np.linalg.inv(dst) @ src
    mapped = voxels @ to_dst[:r, :r].T + to_dst[:r, r]
    unit = np.clip((mapped + 0.5) / n_dst, 0.0, 1.0)
    return [float(v) for v in (*unit.min(axis=0), *unit.max(axis=0))]

"""Torch datasets over manifests: samples -> chat messages with the scan's view, and targets.

Each item is what a VLM trainer or evaluator needs, in the qwen-vl-utils message form::

    item = dataset[i]
    item["messages"]  # [{"role": "user", "content": [
                      #     {"type": "video", "video": [PIL frames]},  # 3D, view="frames"
                      #     {"type": "text", "text": "Is there ...?\\nA. ...\\nB. ..."}]}]
    item["answer"], item["box"], item["view_boxes"], item["mask"], item["severity"]
    item["view"]      # the FrameView / MontageView / SliceView / MIPView (None for 2D)
    item["sample"]    # the Sample

Prompts (system prompt, answer format, ``<think>`` tags) are the model layer's business: the
text here is only the question and its options.

Loading and preprocessing (``load_scan`` -> preset -> mask resampling) is a deterministic
MONAI dict pipeline (:mod:`medvl.data.preprocess`) whose output can be cached on disk
(``PersistentDataset``) or in memory (``CacheDataset``); views are rendered after the cache,
so changing ``view`` or ``n_frames`` reuses it.

Example:
    >>> from medvl.data.dataset import DatasetConfig, MedVLDataset, collate
    >>> ds = MedVLDataset("phantoms/manifest.jsonl",
    ...                   DatasetConfig(view="frames", n_frames=8, preset="knee_mri"))
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from medvl.data.manifest import read_manifest
from medvl.data.preprocess import (
    IMAGE_KEY,
    MASK_KEY,
    build_transform,
    image_keys,
    make_scan_dataset,
    meta_key,
    remap_box,
    resolve_preset,
    scan_records,
    unpack,
)
from medvl.data.sample import Sample, SampleError
from medvl.scans.errors import ScanError
from medvl.scans.views import (
    FrameView,
    MontageView,
    ViewSettings,
    scan_to_image,
    show_volume,
)

__all__ = ["DatasetConfig", "MedVLDataset", "collate", "question_text"]

CACHES = (None, "memory", "disk")


@dataclass
class DatasetConfig(ViewSettings):
    """How a `MedVLDataset` preprocesses scans and shows them to the model.

    Attributes:
        view, n_frames, axis, size: How a 3D scan is shown (`medvl.scans.views.ViewSettings`);
            2D scans are always one image.
        orientation: ``"radiological"``, ``"neurological"`` or ``"array"`` (see
            ``medvl.scans.views``).
        window: Intensity ``(low, high)`` mapped to black and white in views; None uses the
            0.5/99.5 percentiles of each scan.
        preset: A preset name of ``medvl.scans.presets`` (``"knee_mri"``, ``"ct"``...),
            ``"auto"`` (each sample's preset chosen from its modality and anatomy, see
            ``medvl.data.preprocess.AUTO_RULES``), a deterministic MONAI array transform
            applied to each image, or None (scans as loaded).
        preset_overrides: Keyword arguments of the named preset, e.g. ``{"target_spacing": 1}``;
            with ``"auto"``, preset name -> its overrides.
        cache: None, ``"memory"`` (MONAI ``CacheDataset``, filled at construction) or
            ``"disk"`` (MONAI ``PersistentDataset``, filled on first access).
        cache_dir: Root of disk caches; default ``$MEDVL_CACHE/datasets`` (``MEDVL_CACHE``
            defaults to ``~/.cache/medvl``). Each preprocessing gets its own sub-folder.
        cache_workers: Threads filling a memory cache (0: one).
        check_files: Check at construction that every image and mask exists.
    """

    orientation: str = "radiological"
    window: tuple[float, float] | None = None
    preset: str | Callable | None = None
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    cache: Literal["memory", "disk"] | None = None
    cache_dir: str | os.PathLike | None = None
    cache_workers: int = 0
    check_files: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cache not in CACHES:
            raise ValueError(f"cache must be None, 'memory' or 'disk'; got {self.cache!r}")


def default_cache_dir() -> Path:
    """``$MEDVL_CACHE/datasets``, ``MEDVL_CACHE`` defaulting to ``~/.cache/medvl``."""
    return Path(os.environ.get("MEDVL_CACHE") or Path.home() / ".cache" / "medvl") / "datasets"


class MedVLDataset(torch.utils.data.Dataset):
    """A map-style dataset of samples as chat messages, targets and views.

    Args:
        source: A JSONL manifest, or `Sample`s already in memory.
        config: Preprocessing, cache and view settings; default `DatasetConfig()`.
        root: Folder that relative sample paths resolve against: default the manifest's
            folder, or the working directory for samples in memory.

    Raises:
        ManifestError: A bad manifest line, or (``check_files``) a missing image or mask: the
            message names the manifest, the line and the field.
        SampleError: For samples in memory, a missing file (the message names the sample id).
        ValueError: A bad config or preset.

    Items are dicts (see the module docstring): ``id``, ``messages``, ``answer``, ``box`` (the
    sample's box mapped onto the preprocessed scan, normalised; equal to ``sample.box`` when the
    preset does not crop or pad), ``view_boxes`` (where that box appears in the view, in the
    view's own convention: frames ``{frame: normalised box}``, montage ``{tile: pixel box}``,
    slice / MIP / 2D ``{0: normalised box}``; empty if the box is not shown; None without a
    box), ``mask`` (the label map on the preprocessed scan's grid, or None), ``severity``,
    ``scan`` (the preprocessed first image, a MetaTensor), ``view`` and ``sample``. Batch them
    with :func:`collate`.

    Attributes:
        samples: The samples, in manifest order.
        scans: The MONAI dataset of preprocessed records, one per scan (``Dataset``,
            ``CacheDataset`` or ``PersistentDataset``).
        scan_index: For each sample, the index of its record in ``scans``.
        cache_path: The disk cache folder of this preprocessing, or None.

    Warning:
        A disk cache is a folder of ``torch.save`` files that MONAI reads back. The pipeline
        stores only plain tensors and primitive values there, so MONAI loads them with
        ``torch.load(weights_only=True)`` and a planted file cannot run code; it can still
        feed wrong volumes. Use a ``cache_dir`` only you write to, and never point
        ``PersistentDataset(weights_only=False)`` (MONAI's escape hatch for MetaTensors) at a
        folder you do not trust: that unpickles arbitrary objects.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[Sample],
        config: DatasetConfig | None = None,
        *,
        root: str | os.PathLike | None = None,
    ) -> None:
        self.config = config = config or DatasetConfig()
        if isinstance(source, (str, os.PathLike)) and root is None:
            root = Path(source).parent  # where read_manifest checks the files too
            samples = read_manifest(source, check_files=config.check_files)
        else:
            if isinstance(source, (str, os.PathLike)):
                samples = read_manifest(source)
            else:
                samples = list(source)
            root = Path.cwd() if root is None else root
            if config.check_files:
                _check_files(samples, root)
        self.root = Path(root)
        self.samples: list[Sample] = samples
        presets, names, label, fingerprint = resolve_preset(
            config.preset, config.preset_overrides, samples
        )
        records, self.scan_index = scan_records(samples, self.root, names)
        self.n_images = max((len(s.image_paths(self.root)) for s in samples), default=1)
        self.transform = build_transform(presets, self.n_images)
        self.cache_path: Path | None = None
        if config.cache == "disk":
            base = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            # One folder per preprocessing: a changed preset never reads another's files.
            self.cache_path = base / f"{label}-{fingerprint[:16]}"
        try:  # a memory cache loads every scan now
            self.scans = make_scan_dataset(
                records, self.transform, config.cache, self.cache_path, config.cache_workers
            )
        except RuntimeError as e:
            raise _unwrap(e, "filling the memory cache") from e

    def __len__(self) -> int:
        return len(self.samples)

    def preprocessed(self, index: int) -> dict[str, Any]:
        """Sample ``index``'s preprocessed record, straight from the (cached) MONAI dataset:
        ``image`` (and ``image_1``...) and ``mask`` as plain tensors, ``<key>_meta`` dicts."""
        try:
            record = self.scans[self.scan_index[index]]
        except RuntimeError as e:
            raise _unwrap(e, f"sample {self.samples[index].id!r}") from e
        if self.config.cache == "memory":
            # CacheDataset hands out its own objects when no random transform follows the
            # cache (copy_cache only applies before random ones): copy, so that a caller
            # editing a tensor in place cannot change what later epochs see.
            record = {k: _copy(v) for k, v in record.items()}
        return record

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        record = self.preprocessed(index)
        try:
            return _item(sample, record, self.config, self.n_images)
        except (ValueError, IndexError) as e:  # a box that does not fit the scan, say
            raise ValueError(f"sample {sample.id!r}: {e}") from e


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def _unwrap(error: RuntimeError, where: str) -> Exception:
    """MONAI wraps a failing transform's error in ``RuntimeError("applying transform ...")``,
    once per nesting level; dig out the original so a ScanError reaches the user as one."""
    cause: BaseException = error
    while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ScanError):
        return ScanError(f"{where}: {cause}")
    return RuntimeError(f"{where}: preprocessing failed: {type(cause).__name__}: {cause}")


def _check_files(samples: Sequence[Sample], root: str | os.PathLike) -> None:
    for sample in samples:
        named = [("image", p) for p in sample.image_paths(root)]
        if sample.mask is not None:
            named.append(("mask", sample.mask_path(root)))
        for name, path in named:
            if not path.exists():
                got = f"{path} (does not exist), in sample {sample.id!r}"
                raise SampleError(name, "an existing file or DICOM folder", got)


def question_text(sample: Sample) -> str:
    """The question followed by its options, one ``A. text`` line each."""
    if not sample.options:
        return sample.question
    return "\n".join([sample.question, *(f"{k}. {v}" for k, v in sample.options.items())])


def _item(
    sample: Sample, record: Mapping[str, Any], config: DatasetConfig, n_images: int
) -> dict[str, Any]:
    keys = [k for k in image_keys(n_images) if k in record]
    scans = [unpack(record, k) for k in keys]
    content, views = zip(*(_show(scan, config) for scan in scans), strict=True)
    view = views[0]
    box = view_boxes = None
    if sample.box is not None:
        # The box refers to the first image; a sample with several images (views of one
        # study) has no box on the others.
        meta = record[meta_key(IMAGE_KEY)]
        ndim = len(meta["spatial_shape"])
        if len(sample.box) != 2 * ndim:
            raise ValueError(f"a {len(sample.box)}-number box on a {ndim}D scan")
        box = remap_box(
            sample.box, meta["loaded_affine"], meta["loaded_shape"],
            meta["affine"], meta["spatial_shape"],
        )  # fmt: skip
        view_boxes = _view_boxes(view, box)
    text = {"type": "text", "text": question_text(sample)}
    return {
        "id": sample.id,
        "messages": [{"role": "user", "content": [*content, text]}],
        "answer": sample.answer,
        "box": box,
        "view_boxes": view_boxes,
        "mask": None if sample.mask is None else unpack(record, MASK_KEY),
        "severity": sample.severity,
        "scan": scans[0],
        "view": view,
        "sample": sample,
    }


def _show(scan: torch.Tensor, config: DatasetConfig) -> tuple[dict[str, Any], Any]:
    """One scan -> its message content entry and its view (None for a 2D image)."""
    if scan.ndim == 3:
        return _image(scan_to_image(scan)), None
    view = show_volume(scan, config, spacing=scan.meta["spacing"],
                       orientation=config.orientation, window=config.window)  # fmt: skip
    if isinstance(view, FrameView):
        return {"type": "video", "video": view.frames}, view
    return _image(view.image), view


def _image(image: Image.Image) -> dict[str, Any]:
    return {"type": "image", "image": image}


def _view_boxes(view: Any, box: list[float]) -> dict[int, list[float]]:
    if view is None:  # 2D: the image is the scan as stored, so the box is already its box
        return {0: list(box)}
    if isinstance(view, FrameView):
        return view.frame_boxes(box)
    if isinstance(view, MontageView):
        return view.tile_boxes(box)
    shown = view.image_box(box)
    return {} if shown is None else {0: shown}


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Batch items as lists, key by key: nothing is stacked or converted.

    Scans of different sizes, PIL images, views and meta dicts holding None (which MONAI's
    ``list_data_collate`` and torch's ``default_collate`` reject) all pass through; the
    model's processor does the real batching. Use as ``DataLoader(..., collate_fn=collate)``.
    """
    keys = list(dict.fromkeys(k for item in batch for k in item))
    return {k: [item.get(k) for item in batch] for k in keys}

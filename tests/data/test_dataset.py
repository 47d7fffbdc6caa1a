"""MedVLDataset on phantom manifests: messages, views and boxes, caches, errors, batching."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandGaussianNoise, ScaleIntensity, Spacing
from PIL import Image

from medvl.data.dataset import DatasetConfig, MedVLDataset, collate, question_text
from medvl.data.manifest import ManifestError, read_manifest
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.data.preprocess import auto_preset, remap_box
from medvl.data.sample import Sample, SampleError
from medvl.scans import ScanError
from medvl.scans.views import FrameView, MIPView, MontageView, SliceView

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One knee (3D NIfTI), one fundus (PNG) and one chest X-ray (DICOM) case."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("phantoms"), n=1, progress=False)


@pytest.fixture(scope="module")
def knee_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A knee case of its own, for the tests that edit files."""
    out = tmp_path_factory.mktemp("knee")
    return generate_phantom_dataset(out, n=1, seed=1, modalities=["knee"], progress=False)


def index_of(ds: MedVLDataset, sample_id: str) -> int:
    return next(i for i, s in enumerate(ds.samples) if s.id == sample_id)


def grounding(ds: MedVLDataset, anatomy: str) -> int:
    return next(
        i for i, s in enumerate(ds.samples) if s.anatomy == anatomy and s.answer_type == "grounding"
    )


def one_per_scan(ds: MedVLDataset) -> list[int]:
    """The first sample of each distinct preprocessed record."""
    return sorted({r: i for i, r in reversed(list(enumerate(ds.scan_index)))}.values())


def assert_contains(outer, inner, tol: float = 1e-9) -> None:
    half = len(inner) // 2
    assert all(outer[i] <= inner[i] + tol for i in range(half)), (outer, inner)
    assert all(outer[i] >= inner[i] - tol for i in range(half, 2 * half)), (outer, inner)


def test_2d_item_is_one_image_message(manifest: Path) -> None:
    ds = MedVLDataset(manifest, DatasetConfig())
    for anatomy in ("fundus", "chest"):
        item = ds[grounding(ds, anatomy)]
        [message] = item["messages"]
        assert message["role"] == "user"
        image, text = message["content"]
        assert image["type"] == "image" and isinstance(image["image"], Image.Image)
        assert image["image"].size == tuple(item["scan"].shape[1:])  # (W, H) as stored
        assert text == {"type": "text", "text": item["sample"].question}
        assert item["view"] is None
        # No preset: the box is the sample's, and on a 2D image it is its own view box.
        assert item["box"] == item["sample"].box
        assert item["view_boxes"] == {0: item["sample"].box}
        assert item["answer"] == item["sample"].answer


def test_options_are_rendered_after_the_question(manifest: Path) -> None:
    ds = MedVLDataset(manifest, DatasetConfig(n_frames=4, size=32))
    i = next(i for i, s in enumerate(ds.samples) if s.options)
    text = ds[i]["messages"][0]["content"][-1]["text"]
    sample = ds.samples[i]
    assert text == question_text(sample)
    assert text.splitlines() == [sample.question, *(f"{k}. {v}" for k, v in sample.options.items())]


def test_3d_frames_give_a_video_and_per_frame_boxes(manifest: Path) -> None:
    ds = MedVLDataset(manifest, DatasetConfig(view="frames", n_frames=8, size=48))
    item = ds[grounding(ds, "knee")]
    video, _ = item["messages"][0]["content"]
    assert video["type"] == "video" and len(video["video"]) == 8
    assert all(isinstance(f, Image.Image) and max(f.size) == 48 for f in video["video"])
    view = item["view"]
    assert isinstance(view, FrameView) and item["view_boxes"] == view.frame_boxes(item["box"])
    assert item["view_boxes"], "the lesion is on some frame"
    back = view.box_from_frames(item["view_boxes"])
    box, axis = item["box"], view.axis
    in_plane = [a for a in range(3) if a != axis]
    for a in in_plane:  # exact in-plane
        assert back[a] == pytest.approx(box[a]) and back[a + 3] == pytest.approx(box[a + 3])
    # Through-plane, only the frames' slices are known: inside the voxels the box covers.
    n = item["scan"].shape[1 + axis]
    assert np.floor(box[axis] * n) / n <= back[axis] + 1e-9
    assert back[axis + 3] <= np.ceil(box[axis + 3] * n) / n + 1e-9


def test_frames_showing_every_slice_recover_a_box_containing_the_original(manifest: Path) -> None:
    probe = MedVLDataset(manifest, DatasetConfig(n_frames=2, size=16))
    n_slices = probe[grounding(probe, "knee")]["scan"].shape[1]  # along axis 0
    ds = MedVLDataset(manifest, DatasetConfig(n_frames=n_slices, axis=0, size=16))
    item = ds[grounding(ds, "knee")]
    back = item["view"].box_from_frames(item["view_boxes"])
    assert_contains(back, item["box"])
    assert_contains(back, item["sample"].box)  # no preset: the same box


def test_montage_slice_and_mip_give_one_image(manifest: Path) -> None:
    for view, cls in (("montage", MontageView), ("slice", SliceView), ("mip", MIPView)):
        ds = MedVLDataset(manifest, DatasetConfig(view=view, n_frames=9, size=32))
        item = ds[grounding(ds, "knee")]
        image, _ = item["messages"][0]["content"]
        assert image["type"] == "image" and isinstance(image["image"], Image.Image)
        assert isinstance(item["view"], cls)
        if view == "montage":
            assert item["view_boxes"] == item["view"].tile_boxes(item["box"])
            back = item["view"].box_from_tiles(item["view_boxes"])
            assert back[1] == pytest.approx(item["box"][1])  # in-plane (axis 2 tiles)
            assert back[3] == pytest.approx(item["box"][3])


def test_preset_maps_box_and_mask_onto_the_preprocessed_scan(manifest: Path) -> None:
    """The auto presets crop and resample; box and mask must follow, label by label."""
    ds = MedVLDataset(manifest, DatasetConfig(preset="auto", n_frames=4, size=32))
    assert {s.anatomy: r for s, r in zip(ds.samples, _record_presets(ds), strict=True)} == {
        "knee": "knee_mri",
        "fundus": "fundus",
        "chest": "chest_xray",
    }
    for i, sample in enumerate(ds.samples):
        if sample.answer_type != "grounding" or sample.mask is None:
            continue
        item = ds[i]
        mask = item["mask"][0].numpy()
        assert mask.shape == tuple(item["scan"].shape[1:])
        assert set(np.unique(mask)) <= set(range(16)), "nearest keeps integer labels"
        voxels = np.argwhere(mask == sample.meta["mask_label"])
        n = np.array(mask.shape)
        from_mask = np.concatenate([voxels.min(0) / n, (voxels.max(0) + 1) / n])
        # The mask's bounding box and the mapped box agree to within a voxel.
        assert np.all(np.abs(from_mask - item["box"]) * np.concatenate([n, n]) <= 1.0)


def _record_presets(ds: MedVLDataset) -> list[str | None]:
    return [ds.scans.data[r]["preset"] for r in ds.scan_index]


def test_auto_preset_rules(manifest: Path) -> None:
    samples = read_manifest(manifest)
    picked = {s.anatomy: auto_preset(s) for s in samples}
    assert picked == {"knee": "knee_mri", "fundus": "fundus", "chest": "chest_xray"}
    other = samples[0]
    for modality, anatomy, preset in [
        ("pathology", "liver", None), ("CT", "knee", "ct"), ("X-ray", "knee", None),
        ("MR", "brain", "brain_mri"), ("CR", "chest", "chest_xray"),
    ]:  # fmt: skip
        other.modality, other.anatomy = modality, anatomy
        assert auto_preset(other) == preset, (modality, anatomy)


def _items_equal(a: dict, b: dict) -> None:
    assert a["id"] == b["id"] and a["box"] == pytest.approx(b["box"] or None)
    torch.testing.assert_close(a["scan"].as_tensor(), b["scan"].as_tensor())
    assert a["scan"].meta["spacing"] == pytest.approx(b["scan"].meta["spacing"])
    if a["mask"] is None:
        assert b["mask"] is None
    else:
        torch.testing.assert_close(a["mask"].as_tensor(), b["mask"].as_tensor())
    for p, q in zip(_pictures(a), _pictures(b), strict=True):
        assert np.array_equal(np.asarray(p), np.asarray(q))


def _pictures(item: dict) -> list[Image.Image]:
    """Every image and video frame of an item's message, in order."""
    shown = []
    for part in item["messages"][0]["content"]:
        shown += part.get("video", [part["image"]] if "image" in part else [])
    return shown


def test_disk_cache_is_written_then_read(knee_manifest: Path, tmp_path: Path) -> None:
    config = dict(preset="knee_mri", n_frames=4, size=32)
    plain = MedVLDataset(knee_manifest, DatasetConfig(**config))
    cached = MedVLDataset(knee_manifest, DatasetConfig(**config, cache="disk", cache_dir=tmp_path))
    assert cached.cache_path.parent == tmp_path and cached.cache_path.name.startswith("knee_mri-")
    first = [cached[i] for i in range(len(cached))]
    files = sorted(cached.cache_path.glob("*.pt"))
    assert len(files) == 1  # one per scan: its questions share it, mask included
    for i in one_per_scan(plain):
        _items_equal(first[i], plain[i])

    # Spoil the scan in place, keeping its size and mtime (what the cache key checks): a fresh
    # dataset still returns the right volumes, so they can only come from the cache folder.
    image = knee_manifest.parent / plain.samples[0].image
    backup = image.with_suffix(".bak")
    shutil.copy2(image, backup)
    try:
        stat = image.stat()
        image.write_bytes(b"\0" * stat.st_size)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        again = MedVLDataset(
            knee_manifest, DatasetConfig(**config, cache="disk", cache_dir=tmp_path)
        )
        assert again.cache_path == cached.cache_path
        for i, a in enumerate(first):
            _items_equal(again[i], a)
        assert sorted(again.cache_path.glob("*.pt")) == files
        # Uncached, the spoiled file is read and fails with the sample and the file named.
        with pytest.raises(
            ScanError, match=r"sample 'knee-100000-[a-z-]+'.*image\.nii\.gz: not a readable"
        ):
            plain[0]
    finally:
        shutil.move(backup, image)


def test_changed_preset_gets_another_cache_folder(knee_manifest: Path, tmp_path: Path) -> None:
    def folder(**kw) -> Path:
        ds = MedVLDataset(knee_manifest, DatasetConfig(cache="disk", cache_dir=tmp_path, **kw))
        ds[0]
        return ds.cache_path

    base = folder(preset="knee_mri")
    assert folder(preset="knee_mri") == base
    coarser = folder(preset="knee_mri", preset_overrides={"target_spacing": 1.0})
    raw = folder(preset=None)
    # Custom transforms are told apart by their parameters, and found again when rebuilt.
    custom = folder(preset=Compose([Spacing(pixdim=2.0), ScaleIntensity()]))
    assert folder(preset=Compose([Spacing(pixdim=2.0), ScaleIntensity()])) == custom
    other = folder(preset=Compose([Spacing(pixdim=3.0), ScaleIntensity()]))
    assert len({base, coarser, raw, custom, other}) == 5
    assert all(any(p.glob("*.pt")) for p in (base, coarser, raw, custom, other))


def test_memory_cache_equals_uncached(manifest: Path) -> None:
    config = dict(preset="auto", view="montage", n_frames=4, size=32)
    plain = MedVLDataset(manifest, DatasetConfig(**config))
    cached = MedVLDataset(manifest, DatasetConfig(**config, cache="memory"))
    assert len(cached.scans._cache) == len(cached.scans.data) < len(cached)  # one per scan
    for i in one_per_scan(cached):
        _items_equal(cached[i], plain[i])
    # Items are copies: editing one leaves the cache alone.
    cached[0]["scan"].fill_(-1.0)
    _items_equal(cached[0], plain[0])


def test_missing_scan_fails_at_construction_with_its_line(manifest: Path) -> None:
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[1])
    record["image"] = str(manifest.parent / "nowhere" / "image.nii.gz")
    bad = manifest.parent / "bad.jsonl"  # beside the cases, so the other lines resolve
    bad.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2: field 'image'.*nowhere") as e:
        MedVLDataset(bad)
    assert e.value.line == 2 and e.value.field == "image"

    samples = read_manifest(manifest)
    samples[3].mask = "missing-label.png"
    with pytest.raises(SampleError, match=rf"missing-label\.png.*{samples[3].id}"):
        MedVLDataset(samples, root=manifest.parent)


def test_collate_keeps_a_mixed_batch_as_lists(manifest: Path) -> None:
    ds = MedVLDataset(manifest, DatasetConfig(n_frames=4, size=32))
    picks = [grounding(ds, "knee"), grounding(ds, "fundus"), 0, len(ds) - 1]
    batch = collate([ds[i] for i in picks])
    assert set(batch) >= {"id", "messages", "answer", "box", "view_boxes", "mask", "view"}
    assert all(len(v) == 4 for v in batch.values())
    kinds = [m[0]["content"][0]["type"] for m in batch["messages"]]
    assert kinds[:2] == ["video", "image"]
    assert batch["mask"][0] is not None and batch["box"][2] is None  # None passes through
    assert batch["id"] == [ds.samples[i].id for i in picks]


def test_dataloader_with_collate(manifest: Path) -> None:
    ds = MedVLDataset(manifest, DatasetConfig(n_frames=4, size=32))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0, collate_fn=collate)
    ids = [i for batch in loader for i in batch["id"]]
    assert ids == [s.id for s in ds.samples]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="even"):
        DatasetConfig(n_frames=5)
    DatasetConfig(view="montage", n_frames=5)  # any tile count
    with pytest.raises(ValueError, match="view"):
        DatasetConfig(view="video")
    with pytest.raises(ValueError, match="cache"):
        DatasetConfig(cache="redis")


def test_unknown_or_random_preset_is_refused(manifest: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'knee'"):
        MedVLDataset(manifest, DatasetConfig(preset="knee"))
    with pytest.raises(ValueError, match="random"):
        MedVLDataset(manifest, DatasetConfig(preset=Compose([RandGaussianNoise()])))


def test_remap_box_follows_crop_and_resampling() -> None:
    box = [0.25, 0.5, 0.0, 0.75, 1.0, 0.5]
    eye = np.eye(4)
    assert remap_box(box, eye, (8, 8, 8), eye, (8, 8, 8)) == box
    # Crop the first 2 voxels of each axis: world stays, grid origin moves by 2 voxels.
    cropped = eye.copy()
    cropped[:3, 3] = 2.0
    assert remap_box(box, eye, (8, 8, 8), cropped, (4, 4, 4)) == pytest.approx(
        [0.0, 0.5, 0.0, 1.0, 1.0, 0.5]
    )
    # Halve the spacing with edges kept (what Resize does): the normalised box is unchanged.
    fine = np.diag([0.5, 0.5, 0.5, 1.0])
    fine[:3, 3] = -0.25
    assert remap_box(box, eye, (8, 8, 8), fine, (16, 16, 16)) == pytest.approx(box)


def test_questions_about_one_scan_share_its_record(manifest: Path) -> None:
    samples = read_manifest(manifest)
    knee = [s for s in samples if s.anatomy == "knee"]
    ds = MedVLDataset(knee, DatasetConfig(n_frames=4, size=16), root=manifest.parent)
    assert len(ds.scans.data) == 1 and "mask" in ds.scans.data[0]
    assert [ds[i]["mask"] is None for i in range(len(ds))] == [s.mask is None for s in knee]
    # A second, different mask on the same scan: one record per mask, and one without.
    other = Sample.from_dict({**knee[0].to_dict(), "id": "other-mask", "mask": knee[0].image})
    ds = MedVLDataset([*knee, other], DatasetConfig(n_frames=4, size=16), root=manifest.parent)
    assert len(ds.scans.data) == 3
    torch.testing.assert_close(ds[len(knee)]["mask"].as_tensor(), ds[0]["scan"].as_tensor())

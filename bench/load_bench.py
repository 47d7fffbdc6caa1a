"""Preprocessing speed: a plain MONAI pipeline vs medvl's dataset, uncached and cached.

    python bench/load_bench.py [--n 24] [--size 96] [--spacing 1.0] [--repeats 3]

Writes ``--n`` synthetic knee MRI volumes (NIfTI, 48 x 96 x 96 at 1.5 x 0.75 x 0.75 mm) to a
temporary folder, then times one epoch (every volume once) of the same work done three ways:

(a) MONAI alone: ``LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd ->
    ScaleIntensityRanged -> Resized`` in a plain ``monai.data.Dataset``;
(b) medvl's dataset without a cache: ``load_scan`` (reads, orients to RAS) -> the same
    ``Spacing -> ScaleIntensityRange -> Resize`` as its preset -> packing for the cache;
(c) medvl's dataset with a warm cache: ``PersistentDataset`` (disk) and ``CacheDataset``
    (memory), second epoch and later.

Only preprocessing is timed (volume tensors out); rendering the frames view (PIL) is timed
apart. Each number is the median of ``--repeats`` epochs, after a warm-up that is not timed;
the pipelines take turns item by item, so that bursts of load on a shared machine hit all of
them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from monai.data import Dataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    Resize,
    Resized,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Spacing,
    Spacingd,
)

from medvl.data.dataset import DatasetConfig, MedVLDataset
from medvl.data.manifest import read_manifest
from medvl.data.phantom_samples import generate_phantom_dataset

# The phantoms' intensities run from 0 to about 950: a fixed window, as a CT preset would use.
A_MIN, A_MAX = 0.0, 1000.0
RAS = (("L", "R"), ("P", "A"), ("I", "S"))  # medvl's RAS labels (MONAI's default reads LPS)


def monai_pipeline(pixdim: float, size: int) -> Compose:
    keys = ["image"]
    return Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=RAS),
            Spacingd(keys, pixdim=(pixdim,) * 3, mode="bilinear"),
            ScaleIntensityRanged(keys, A_MIN, A_MAX, b_min=0.0, b_max=1.0, clip=True),
            Resized(keys, spatial_size=(size,) * 3),
        ]
    )


def medvl_preset(pixdim: float, size: int) -> Compose:
    # No Orientation: load_scan already returns RAS, a second pass would only cost time.
    return Compose(
        [
            Spacing(pixdim=(pixdim,) * 3, mode="bilinear"),
            ScaleIntensityRange(A_MIN, A_MAX, b_min=0.0, b_max=1.0, clip=True),
            Resize(spatial_size=(size,) * 3),
        ]
    )


def epoch(get: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        get(i)
    return time.perf_counter() - start


def interleaved_epochs(
    pipelines: dict[str, Callable[[int], object]], n: int, repeats: int
) -> dict[str, float]:
    """Median over ``repeats`` of each pipeline's epoch time, the pipelines taking turns
    item by item: on a shared machine, a burst of load then slows all of them alike."""
    epochs: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(repeats):
        spent = dict.fromkeys(pipelines, 0.0)
        for i in range(n):
            for name, get in pipelines.items():
                start = time.perf_counter()
                get(i)
                spent[name] += time.perf_counter() - start
        for name, seconds in spent.items():
            epochs[name].append(seconds)
    return {name: statistics.median(times) for name, times in epochs.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=24, help="knee volumes (default 24)")
    parser.add_argument("--size", type=int, default=96, help="Resize to size^3 (default 96)")
    parser.add_argument("--spacing", type=float, default=1.0, help="Spacing in mm (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="epochs per median (default 5)")
    parser.add_argument("--frames", type=int, default=16, help="frames of the view timing")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1, as in a "
        "DataLoader worker; 0 keeps torch's default)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        # DataLoader workers run with one thread each (torch sets it), so that is the speed that
        # matters; more threads on a busy 2-core machine also make timings swing 4x: a parallel
        # region waits for its slowest thread, descheduled behind another process.
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)

    with tempfile.TemporaryDirectory(prefix="medvl-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        manifest = generate_phantom_dataset(
            root / "knee", args.n, modalities=["knee"], progress=False
        )
        # One question per volume, without a mask: the same work as the plain pipeline.
        samples = list({s.image: s for s in read_manifest(manifest) if s.mask is None}.values())
        print(f"wrote {len(samples)} knee volumes in {time.perf_counter() - t0:.1f} s")
        n = len(samples)

        plain = Dataset(
            [{"image": str(p)} for s in samples for p in s.image_paths(manifest.parent)],
            monai_pipeline(args.spacing, args.size),
        )

        def medvl(**cache) -> MedVLDataset:
            config = DatasetConfig(
                preset=medvl_preset(args.spacing, args.size), n_frames=args.frames, **cache
            )
            return MedVLDataset(samples, config, root=manifest.parent)

        uncached = medvl()
        a, b = plain[0]["image"], uncached.preprocessed(0)["image"]
        assert a.shape == b.shape, (a.shape, b.shape)
        diff = float((a.as_tensor() - b).abs().max())

        for i in range(min(2, n)):  # warm-up: imports, lazy initialisation, file cache
            plain[i], uncached.preprocessed(i)

        disk = medvl(cache="disk", cache_dir=root / "cache")
        t_disk_fill = epoch(disk.preprocessed, n)  # epoch 1 writes the cache
        start = time.perf_counter()
        memory = medvl(cache="memory")
        t_memory_fill = time.perf_counter() - start  # CacheDataset fills at construction

        # (a) and (b) take turns with each other only: mixing in the cached pipelines' very
        # different memory traffic shifted the (b)/(a) ratio by up to 0.15 in trials.
        t = interleaved_epochs(
            {"plain": plain.__getitem__, "uncached": uncached.preprocessed}, n, args.repeats
        )
        cached = {
            "disk": disk.preprocessed,
            "memory": memory.preprocessed,
            "items": disk.__getitem__,  # cached preprocessing + frames view (PIL)
        }
        t.update(interleaved_epochs(cached, n, args.repeats))

    rows = {
        "(a) MONAI plain Dataset": t["plain"],
        "(b) medvl uncached": t["uncached"],
        "(c) medvl cached, disk (warm)": t["disk"],
        "(c) medvl cached, memory (warm)": t["memory"],
        "    disk cache fill (epoch 1)": t_disk_fill,
        "    memory cache fill (construction)": t_memory_fill,
        f"    cached items with {args.frames}-frame view": t["items"],
    }
    print(
        f"\n{n} volumes 48x96x96 -> spacing {args.spacing} mm -> {args.size}^3, "
        f"median of {args.repeats} epochs, torch threads {torch.get_num_threads()}"
    )
    print(f"(a) vs (b) first volume: same shape {tuple(a.shape)}, max |diff| {diff:.2e}\n")
    print(f"{'pipeline (one epoch)':<44}{'seconds':>9}{'items/s':>10}")
    for name, seconds in rows.items():
        print(f"{name:<44}{seconds:>9.3f}{n / seconds:>10.1f}")
    ratios = {
        "cached_speedup (disk)": t["uncached"] / t["disk"],
        "cached_speedup (memory)": t["uncached"] / t["memory"],
        "uncached_vs_monai": rows["(b) medvl uncached"] / rows["(a) MONAI plain Dataset"],
    }
    targets = {"cached_speedup": (">=", 10.0), "uncached_vs_monai": ("<=", 1.2)}
    print()
    for name, value in ratios.items():
        op, target = targets[name.split(" ")[0]]
        met = value >= target if op == ">=" else value <= target
        print(f"{name:<26}{value:>8.2f}x   target {op} {target:g}: {'met' if met else 'MISSED'}")
    view = (t["items"] - t["disk"]) / n
    print(f"{'frames view per item':<26}{view * 1000:>8.1f} ms (PIL rendering, after the cache)")
    return {**rows, **ratios}


if __name__ == "__main__":
    main()

"""Synthetic scans with exact ground truth: knee MRI (3D), retinal fundus and chest X-ray (2D).

Each ``make_*_case(seed)`` is a pure function of its seed and returns a `PhantomCase`: the
image in the layout ``medvl.scans.load_scan`` returns, a finding label map, every modelled
finding with its grade (0 = absent) and exact box, and landmark boxes. ``write_case`` writes
the files (NIfTI, DICOM, PNG) and ``generate_phantoms`` makes a whole set.

Example:
    >>> from medvl.scans.phantoms import make_knee_case
    >>> case = make_knee_case(3)
    >>> case.image.shape, [(f.name, f.severity) for f in case.findings][:1]
    ((1, 48, 96, 96), [('bone_marrow_lesion', 3)])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from medvl.scans.phantoms.case import Finding, PhantomCase, mask_box
from medvl.scans.phantoms.chest import make_chest_case
from medvl.scans.phantoms.fundus import make_fundus_case
from medvl.scans.phantoms.knee import make_knee_case
from medvl.scans.phantoms.parallel import PhantomJob, make_and_write
from medvl.scans.phantoms.writers import write_case

__all__ = [
    "MAKERS",
    "MAX_CASES",
    "Finding",
    "PhantomCase",
    "PhantomJob",
    "case_seed",
    "check_kinds",
    "generate_phantoms",
    "iter_phantoms",
    "make_chest_case",
    "make_fundus_case",
    "make_and_write",
    "make_knee_case",
    "mask_box",
    "phantom_jobs",
    "write_case",
]

MAKERS: dict[str, Callable[[int], PhantomCase]] = {
    "knee": make_knee_case,
    "fundus": make_fundus_case,
    "chest": make_chest_case,
}
MAX_CASES = 100_000  # cases per kind and seed; keeps the seeds of different set seeds apart


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in the set of ``seed``: sets of different seeds never overlap."""
    if not 0 <= index < MAX_CASES:
        raise ValueError(f"index must be in [0, {MAX_CASES}), got {index}")
    return seed * MAX_CASES + index


def check_kinds(kinds: Iterable[str]) -> None:
    """Raises ValueError naming each kind that is not one of `MAKERS`."""
    if unknown := sorted(set(kinds) - set(MAKERS)):
        raise ValueError(f"unknown phantom kind(s) {unknown}; choose from {list(MAKERS)}")


def phantom_jobs(
    n: int, seed: int = 0, modalities: Iterable[str] = ("knee", "fundus", "chest")
) -> list[PhantomJob]:
    """The cases of a set: ``n`` of each kind, interleaved (knee 0, fundus 0, chest 0, knee 1,
    ...), case ``i`` from ``case_seed(seed, i)``.

    Raises:
        ValueError: For an unknown kind.
    """
    kinds = list(modalities)
    check_kinds(kinds)
    return [PhantomJob(kind, case_seed(seed, i)) for i in range(n) for kind in kinds]


def iter_phantoms(
    n: int, seed: int = 0, modalities: Iterable[str] = ("knee", "fundus", "chest")
) -> Iterator[PhantomCase]:
    """Yields the cases of `phantom_jobs`, made in this process and not written.

    Raises:
        ValueError: For an unknown kind.
    """
    for job in phantom_jobs(n, seed, modalities):
        yield MAKERS[job.kind](job.seed)


def generate_phantoms(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    modalities: Iterable[str] = ("knee", "fundus", "chest"),
) -> list[PhantomCase]:
    """Makes and writes ``n`` cases of each kind under ``out_dir`` (see `write_case`).

    Args:
        out_dir: Destination folder, one sub-folder per case.
        n: Cases per kind.
        seed: Set seed; case ``i`` uses ``case_seed(seed, i)``.
        modalities: Kinds to make, among ``"knee"``, ``"fundus"``, ``"chest"``.

    Returns:
        The cases (interleaved as `iter_phantoms` yields them), with ``paths`` filled in;
        made on several processes when there are many (`make_and_write`).
    """
    return list(make_and_write(phantom_jobs(n, seed, modalities), out_dir))

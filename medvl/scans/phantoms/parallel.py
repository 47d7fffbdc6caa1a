"""Making and writing many phantom cases on several processes, in order.

Each case is a pure function of its kind, seed and (chest) difficulty, and `write_case` writes
one folder per case with deterministic names and UIDs, so cases can be made on any number of
processes and still come out byte-identical and in the order asked. The 2,700 held-out chest
cases of ``medvl quickstart`` take about half the time on two cores.

Workers are forked, on Linux only. Spawned workers would re-run a caller's script that lacks an
``if __name__ == "__main__":`` guard (every notebook-style script calling
`medvl.sft_then_grpo.run_sft_then_grpo` would fail), and forking is safe here because a
worker runs numpy, scipy, Pillow, pydicom and nibabel only, never torch's OpenMP pool. On
other systems (macOS forks badly) the cases are made in the calling process.

Example:
    >>> jobs = [PhantomJob("chest", seed, "easiest") for seed in range(4)]
    >>> cases = list(make_and_write(jobs, "phantoms/"))
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

from medvl.scans.phantoms.case import PhantomCase

__all__ = ["MIN_PARALLEL_JOBS", "PhantomJob", "default_workers", "make_and_write"]

MIN_PARALLEL_JOBS = 64
"""Fewer jobs than this are made in this process: starting the pool and sending each case back
would cost about what the workers save."""


class PhantomJob(NamedTuple):
    """One case to make.

    Attributes:
        kind: ``chest``, ``fundus`` or ``knee`` (`medvl.scans.phantoms.MAKERS`).
        seed: The case's seed (`medvl.scans.phantoms.case_seed`).
        difficulty: A chest difficulty level (`medvl.scans.phantoms.chest.DIFFICULTIES`);
            None: the maker's default. Ignored for knee and fundus.
    """

    kind: str
    seed: int
    difficulty: str | None = None


def _make_and_write_one(job: PhantomJob, out_dir: str) -> PhantomCase:
    from medvl.scans.phantoms import MAKERS, make_chest_case, write_case

    if job.kind == "chest" and job.difficulty is not None:
        case = make_chest_case(job.seed, job.difficulty)
    else:
        case = MAKERS[job.kind](job.seed)
    write_case(case, out_dir)
    return case


def default_workers() -> int:
    """Worker processes: the CPUs this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def make_and_write(
    jobs: Sequence[PhantomJob], out_dir: str | Path, workers: int | None = None
) -> Iterator[PhantomCase]:
    """Makes each job's case, writes it under ``out_dir`` (`write_case`) and yields it, in
    the order of ``jobs``, with ``paths`` filled in.

    Args:
        jobs: The cases to make.
        out_dir: Parent folder, one sub-folder per case.
        workers: Processes that make cases (None: `default_workers`; 1, fewer than
            `MIN_PARALLEL_JOBS` jobs, or a system other than Linux: this process alone).

    Raises:
        ValueError: For an unknown kind, before any case is made.
    """
    from medvl.scans.phantoms import check_kinds

    check_kinds(job.kind for job in jobs)
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(jobs) < MIN_PARALLEL_JOBS or not sys.platform.startswith("linux"):
        for job in jobs:
            yield _make_and_write_one(job, str(out_dir))
        return
    chunk = max(1, min(32, len(jobs) // (4 * workers)))
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns on any fork beside threads
            warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                    DeprecationWarning)  # fmt: skip
            results = pool.map(_make_and_write_one, jobs, [str(out_dir)] * len(jobs),
                               chunksize=chunk)  # fmt: skip
        yield from results
    finally:  # stopped early (an error, Ctrl-C): the cases not started are not made
        pool.shutdown(wait=True, cancel_futures=True)

"""Phantoms made on worker processes: the same files, in the same order, as in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.scans.phantoms import PhantomJob, case_seed, make_and_write, make_chest_case
from medvl.scans.phantoms.parallel import MIN_PARALLEL_JOBS


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_two_workers_write_what_one_process_writes(tmp_path) -> None:
    # Enough jobs to start the pool; chest at two difficulties and the other kinds mixed in.
    jobs = [PhantomJob("chest", case_seed(3, i), "easiest" if i % 2 else None)
            for i in range(MIN_PARALLEL_JOBS - 8)]  # fmt: skip
    jobs += [PhantomJob(kind, case_seed(3, i)) for i in range(4) for kind in ("fundus", "knee")]
    alone = list(make_and_write(jobs, tmp_path / "one", workers=1))
    pooled = list(make_and_write(jobs, tmp_path / "two", workers=2))
    assert [c.case_id for c in pooled] == [c.case_id for c in alone]
    assert [c.findings for c in pooled] == [c.findings for c in alone]
    assert pooled[0].paths["image"] == tmp_path / "two" / pooled[0].case_id / "image.dcm"
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(one) >= 3 * len(jobs) and one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []
    # The difficulty reaches the maker in the workers too.
    easiest = make_chest_case(jobs[1].seed, "easiest")
    assert np.array_equal(pooled[1].image, easiest.image)
    assert not np.array_equal(pooled[0].image, make_chest_case(jobs[0].seed, "easiest").image)


def test_unknown_kind_is_refused_before_anything_is_written(tmp_path) -> None:
    jobs = [PhantomJob("chest", 0), PhantomJob("brain", 1)]
    with pytest.raises(ValueError, match=r"unknown phantom kind\(s\) \['brain'\]"):
        list(make_and_write(jobs, tmp_path))
    assert not any(tmp_path.iterdir())

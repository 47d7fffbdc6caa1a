"""Adapters from public medical VQA datasets, as laid out on disk, to medvl manifests.

Nothing is downloaded: each adapter reads a local copy of a dataset in its released layout
and yields `Sample`s whose paths are relative to the manifest's folder. Images are
referenced in place; images embedded in the files (base64, Parquet bytes) are written once
to an ``images/`` folder next to the manifest. A folder of the wrong layout raises
`AdapterError` naming the file expected and where it looked; a record that cannot be
converted is skipped and counted, by reason, in the `ConvertReport`.

Example::

    report = convert_dataset("slake", "~/data/Slake1.0", "manifests/slake.jsonl")
    print(report.summary())
    # slake: /home/me/data/Slake1.0 -> manifests/slake.jsonl
    #   written 7033 samples, skipped 0 records
    #   split: train 4919, test 1061, val 1053
    #   ...

=================  ===========================  ===========================================
name               adapter                      reads
=================  ===========================  ===========================================
vqa_rad            `convert_vqa_rad`            ``VQA_RAD Dataset Public.json``
slake              `convert_slake`              ``train.json``/``validate.json``/``test.json``
pathvqa            `convert_pathvqa`            ``qas/<split>/<split>_qa.pkl`` or Parquet
omnimedvqa         `convert_omnimedvqa`         ``QA_information/*-access/*.json``
pmc_vqa            `convert_pmc_vqa`            ``train.csv``/``test.csv`` (v2: ``*_2.csv``)
3dreasonknee       `convert_reasonknee`         ``split_files/*_split.csv`` + questions
mm_retinal_reason  `convert_mm_retinal_reason`  ``*_reasoning.json`` (base64 images)
=================  ===========================  ===========================================
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medvl.data.adapters._common import AdapterError, ConvertReport, require_dir
from medvl.data.adapters.mm_retinal_reason import convert_mm_retinal_reason
from medvl.data.adapters.omnimedvqa import convert_omnimedvqa
from medvl.data.adapters.pathvqa import convert_pathvqa
from medvl.data.adapters.pmc_vqa import convert_pmc_vqa
from medvl.data.adapters.reasonknee import convert_reasonknee
from medvl.data.adapters.slake import convert_slake
from medvl.data.adapters.vqa_rad import convert_vqa_rad
from medvl.data.manifest import write_manifest
from medvl.data.sample import Sample

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "ConvertReport",
    "adapter_for",
    "convert_dataset",
    "convert_mm_retinal_reason",
    "convert_omnimedvqa",
    "convert_pathvqa",
    "convert_pmc_vqa",
    "convert_reasonknee",
    "convert_slake",
    "convert_vqa_rad",
]

Adapter = Callable[..., Iterator[Sample]]

ADAPTERS: dict[str, Adapter] = {
    "vqa_rad": convert_vqa_rad,
    "slake": convert_slake,
    "pathvqa": convert_pathvqa,
    "omnimedvqa": convert_omnimedvqa,
    "pmc_vqa": convert_pmc_vqa,
    "3dreasonknee": convert_reasonknee,
    "mm_retinal_reason": convert_mm_retinal_reason,
}


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.lower())


def adapter_for(format_name: str) -> tuple[str, Adapter]:
    """The canonical name and adapter for a format name, ignoring case, ``-``, ``_`` and spaces
    (``"VQA-RAD"``, ``"vqarad"`` and ``"vqa_rad"`` are one format).

    Raises:
        AdapterError: No adapter has that name; the message lists the known ones.
    """
    for name, adapter in ADAPTERS.items():
        if _squash(name) == _squash(format_name):
            return name, adapter
    known = ", ".join(ADAPTERS)
    raise AdapterError(f"unknown dataset format {format_name!r}; known formats: {known}")


def convert_dataset(
    format_name: str,
    src: str | os.PathLike,
    out_manifest: str | os.PathLike,
    split: str | None = None,
    **options: Any,
) -> ConvertReport:
    """Converts a local dataset folder into a JSONL manifest (what ``medvl data convert`` runs).

    Args:
        format_name: One of `ADAPTERS` (case, ``-`` and ``_`` ignored).
        src: The dataset folder, in the layout the adapter's docstring draws.
        out_manifest: The manifest to write (atomically); image paths are made relative to its
            folder, and embedded images are decoded into ``images/`` there.
        split: Keep one split (``train``, ``val``, ``test``, ...); None converts all.
        **options: Adapter-specific options, e.g. ``language="zh"`` for SLAKE,
            ``version=2`` for PMC-VQA, ``answers=`` for 3DReasonKnee.

    Returns:
        The `ConvertReport`: samples written, records skipped by reason, counts per split
        and answer type. ``print(report.summary())`` shows it.

    Raises:
        AdapterError: Unknown format or option, missing folder, or a folder of the wrong
            layout (the message names the expected file and where it looked).
    """
    name, adapter = adapter_for(format_name)
    allowed = set(inspect.signature(adapter).parameters) - {"src", "out_dir", "split", "report"}
    if unknown := sorted(set(options) - allowed):
        shown = ", ".join(sorted(allowed)) or "none"
        raise AdapterError(f"{name}: unknown option(s) {', '.join(unknown)}; options: {shown}")
    src_dir = require_dir(src)
    out_manifest = Path(out_manifest).expanduser()
    out_dir = out_manifest.absolute().parent
    report = ConvertReport(name, str(src_dir), manifest=str(out_manifest))
    samples = adapter(src_dir, out_dir=out_dir, split=split, report=report, **options)
    # Adapters are generators: take the first sample now, so a wrong layout fails here,
    # before a manifest is opened, rather than from inside write_manifest.
    first = next(samples, None)
    rest = samples if first is None else itertools.chain([first], samples)
    write_manifest(out_manifest, _unique(rest, report))
    return report


def _unique(samples: Iterator[Sample], report: ConvertReport) -> Iterator[Sample]:
    """Counts each sample into the report; skips (and counts) a repeated id."""
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            report.skip("duplicate id", sample.id)
            continue
        seen.add(sample.id)
        report.add(sample)
        yield sample

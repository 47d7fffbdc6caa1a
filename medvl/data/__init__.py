"""Samples and their JSONL manifests.

`Sample` is the record every layer above shares (see docs/architecture.md, "Sample");
`medvl.data.manifest` reads, writes, validates and converts files of them.
"""

from medvl.data.manifest import (
    ManifestError,
    ManifestReport,
    iter_manifest,
    manifest_to_dataset,
    read_manifest,
    row_to_sample,
    validate_manifest,
    write_manifest,
)
from medvl.data.sample import ANSWER_TYPES, FIELDS, Sample, SampleError, check_record

__all__ = [
    "ANSWER_TYPES",
    "FIELDS",
    "ManifestError",
    "ManifestReport",
    "Sample",
    "SampleError",
    "check_record",
    "iter_manifest",
    "manifest_to_dataset",
    "read_manifest",
    "row_to_sample",
    "validate_manifest",
    "write_manifest",
]

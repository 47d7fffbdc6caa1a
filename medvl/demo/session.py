"""One visitor's session in the demo: their scan, how it is shown, what the model said.

No Gradio import, so it is testable and usable from a notebook::

    session = DemoSession(MedVLM.from_pretrained("outputs/sft/final"))
    session.load("knee.nii.gz")
    answer = session.ask("Where is the effusion?", "grounding")
    session.picture(plane="coronal").image  # the box drawn on the slices it spans

The model is shared (the app makes one); everything else here belongs to one visitor.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medvl.demo.viewer import (
    PLANES,
    Overlay,
    Picture,
    draw_plane,
    window_presets,
    window_range,
)
from medvl.eval.extract import extract_choice
from medvl.eval.metrics import box_iou
from medvl.model import MedVLM
from medvl.model.inputs import Question
from medvl.model.replies import Answer
from medvl.scans import load_scan
from medvl.scans.views.coords import covered

ANSWER_TYPES = ("auto", "open", "closed", "choice", "grounding", "severity")
PREDICTION_COLOUR = (255, 0, 0)  # the model's box and mask
TRUTH_COLOUR = (0, 200, 0)  # a phantom's known lesions
_OPTION = re.compile(r"^\s*([A-Za-z0-9]{1,3})\s*[:.)]\s*(.+?)\s*$")


def parse_options(options_text: str | Sequence[str] | None) -> dict[str, str] | None:
    """Choice options from text (``"A: tear\\nB: normal"``, lines or ``;``-separated) or from a
    list of option texts (one per field) -> ``{"A": ..., "B": ...}``.

    Entries without a label (``A:``, ``A.``, ``A)``) are labelled A, B, ... in order; nothing
    given gives None (no options).
    """
    if isinstance(options_text, str) or options_text is None:
        parts = re.split(r"[\n;]", options_text or "")
    else:
        parts = list(options_text)
    parts = [p.strip() for p in parts if p and p.strip()]
    options: dict[str, str] = {}
    for i, part in enumerate(parts):
        match = _OPTION.match(part)
        key, text = (match.group(1).upper(), match.group(2)) if match else (chr(65 + i), part)
        options[key] = text
    return options or None


class DemoSession:
    """One visitor's scan, its display settings and the model's last answer.

    Args:
        model: The model that answers (shared between sessions; calls are serialised by the
            app's queue).
        workdir: A folder of this session's own files (unpacked uploads), removed by
            :meth:`close`.
    """

    def __init__(self, model: MedVLM, workdir: str | Path | None = None) -> None:
        self.model = model
        self.workdir = Path(workdir) if workdir is not None else None
        self.scan: Any = None
        self.source: Path | None = None
        self.truth: list[Overlay] = []
        self.last: Answer | None = None

    # -- the scan --------------------------------------------------------------------------

    @property
    def is_3d(self) -> bool:
        """Whether the loaded scan is a volume."""
        return self.scan is not None and self.scan.ndim == 4

    def load(
        self, path: str | Path, volume: int | None = None, truth: Sequence[Overlay] = ()
    ) -> dict[str, Any]:
        """Load a scan (``load_scan``: DICOM file or series folder, NIfTI, PNG/JPG); forget
        the previous scan's answer.

        Args:
            path: The scan.
            volume: For a 4D NIfTI, which volume.
            truth: Known boxes/masks (a phantom's), drawn in another colour and scored.

        Returns:
            :meth:`facts`.

        Raises:
            medvl.scans.ScanError: The file cannot be read as a scan (the message names it).
        """
        self.scan = load_scan(path, volume=volume)
        self.source, self.truth, self.last = Path(path), list(truth), None
        return self.facts()

    def facts(self) -> dict[str, Any]:
        """What the screen says about the scan: no path and no file name (a file's name can
        carry a patient's name), nothing from the header but the modality and study year."""
        self._require()
        meta = self.scan.meta
        shape = [int(s) for s in self.scan.shape[1:]]
        oriented = meta.get("orientation") == "RAS"
        return {
            "kind": (f"3D volume, {shape[2]} " + ("axial slices" if oriented else "frames"))
            if self.is_3d else "2D image",
            "shape": " × ".join(map(str, shape)) + (" voxels" if self.is_3d else " pixels"),
            "spacing": " × ".join(f"{float(s):g}" for s in meta["spacing"]) + " mm",
            "orientation": "RAS (shown radiological: patient's right on screen left)"
            if oriented else "as stored in the file (no patient orientation)",
            "modality": meta.get("modality") or "unknown",
            "study year": str(meta.get("study_year") or "not given"),
            "format": meta.get("format") or "?",
            "channels": int(self.scan.shape[0]),
        }  # fmt: skip

    def n_slices(self, plane: str = "axial") -> int:
        """Slices across ``plane`` (1 for a 2D scan)."""
        self._require()
        return int(self.scan.shape[PLANES[plane] + 1]) if self.is_3d else 1

    def window_choices(self) -> list[str]:
        """The window presets for this scan, its default first."""
        self._require()
        meta = self.scan.meta
        return window_presets(meta.get("modality"), meta.get("window"), int(self.scan.shape[0]))

    def picture(
        self,
        plane: str = "axial",
        index: int | None = None,
        window: str | None = None,
        centre: float | None = None,
        width: float | None = None,
        smooth: bool = False,
        show_truth: bool = True,
        show_answer: bool = True,
    ) -> Picture:
        """The scan as the screen shows it (see :func:`medvl.demo.viewer.draw_plane`).

        Args:
            plane: ``axial``, ``coronal`` or ``sagittal`` (3D only).
            index: The slice, clamped to the scan; default the middle one.
            window: A preset of :meth:`window_choices` (default its first); ``"manual"`` uses
                ``centre`` and ``width``.
            smooth: Bilinear instead of nearest-neighbour enlargement.
            show_truth: Draw the known lesions (phantoms) in green.
            show_answer: Draw the last answer's box and mask in red.
        """
        self._require()
        meta = self.scan.meta
        preset = window or self.window_choices()[0]
        low_high = window_range(self.scan.as_tensor().numpy(), preset, centre, width,
                                meta.get("window"))  # fmt: skip
        if index is not None:
            index = min(self.n_slices(plane) - 1, max(0, int(index)))
        overlays = list(self.truth) if show_truth else []
        if show_answer and self.last is not None:
            overlays.append(Overlay(PREDICTION_COLOUR, self.last.box, self.last.mask))
        return draw_plane(self.scan, plane, index, low_high, smooth, overlays=overlays)

    def box_slice(self, plane: str = "axial") -> int | None:
        """The slice across ``plane`` through the middle of the last answer's 3D box."""
        self._require()
        box = self.last.box if self.last is not None else None
        if not self.is_3d or box is None or len(box) != 6:
            return None
        axis = PLANES[plane]
        first, last = covered(box[axis], box[axis + 3], self.n_slices(plane))
        return (first + last) // 2  # the middle of the range the screen names

    def iou(self) -> float | None:
        """The last answer's box against the best-matching known lesion box (phantoms)."""
        boxes = [o.box for o in self.truth if o.box is not None]
        if self.last is None or self.last.box is None or not boxes:
            return None
        fitting = [b for b in boxes if len(b) == len(self.last.box)]
        return max((box_iou(self.last.box, b) for b in fitting), default=None)

    # -- asking ----------------------------------------------------------------------------

    def question(self, text: str, answer_type: str | None = None, options: Any = None) -> Question:
        """The :class:`~medvl.model.inputs.Question` about the loaded scan."""
        self._require()
        if not (text or "").strip():
            raise ValueError("type a question first")
        kind = None if not answer_type or answer_type == "auto" else answer_type
        parsed = parse_options(options)
        if kind == "choice" and not parsed:
            raise ValueError("a choice question needs its options: fill in at least two")
        return Question(self.scan, text.strip(), parsed, kind)

    def ask(
        self, text: str, answer_type: str | None = None, options: Any = None, **kwargs: Any
    ) -> Answer:
        """Ask about the loaded scan (``MedVLM.answer``, heads included); kept as :attr:`last`.
        ``kwargs`` go to ``MedVLM.answer`` (``max_new_tokens``, ``max_time``...)."""
        self.last = self.model.answer(self.question(text, answer_type, options), **kwargs)
        return self.last

    def stream(
        self, text: str, answer_type: str | None = None, options: Any = None, **kwargs: Any
    ) -> Iterator[str]:
        """Yield the reply so far (growing text) as it is generated; when it ends, the reply
        is read with the heads (``MedVLM.read_reply``) into :attr:`last`."""
        asked = self.question(text, answer_type, options)
        self.last, ids, reply = None, [], ""
        for piece in self.model.stream_answer(asked, reply_ids=ids, **kwargs):
            reply += piece
            yield reply
        settings = {k: kwargs[k] for k in ("reasoning", "view", "n_frames") if k in kwargs}
        self.last = self.model.read_reply(asked, ids, **settings)

    def close(self) -> None:
        """Forget the scan and delete this session's files."""
        self.scan, self.source, self.last, self.truth = None, None, None, []
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _require(self) -> None:
        if self.scan is None:
            raise ValueError("no scan loaded: upload one or pick an example first")


def against_options(answer: str | None, options: Any) -> str:
    """The answer as the screen shows it: for a choice question the option it picks, letter and
    text (``"B: meniscal tear"``, read with :func:`medvl.eval.extract.extract_choice`, so a
    hedge picks nothing); else the answer's text."""
    if not answer:
        return "(no answer in the reply)"
    parsed = parse_options(options)
    letter = extract_choice(answer, parsed) if parsed else None
    if letter is None or letter not in parsed:
        return answer
    return f"{letter}: {parsed[letter]}"


def truth_overlays(case: Any) -> list[Overlay]:
    """A phantom case's present findings as green overlays: each box, and the lesion mask."""
    boxes = [f.box for f in case.findings if f.box is not None and f.severity > 0]
    overlays = [Overlay(TRUTH_COLOUR, box=list(b)) for b in boxes]
    if overlays:
        overlays[0].mask = case.mask > 0
    return overlays

"""The logic behind the Gradio demo (``demo/app.py`` only wires it to widgets).

A :class:`DemoSession` holds one model and the scan being looked at: it loads a scan, draws a
slice (3D) or the image (2D) with a box overlaid through the view's coordinate map, and asks
the model, either at once (:meth:`DemoSession.answer`, heads included) or streaming the reply's
text (:meth:`DemoSession.stream_answer`). No Gradio import here, so it is testable and reusable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from medvl.model import MedVLM
from medvl.scans import load_scan
from medvl.scans.views import draw_box, scan_to_image, volume_to_slice

BOX_COLOUR = (255, 0, 0)  # the model's box on the slice
ANSWER_TYPES = ("auto", "open", "closed", "choice", "grounding", "severity")
_OPTION = re.compile(r"^\s*([A-Za-z0-9]{1,3})\s*[:.)]\s*(.+?)\s*$")


def parse_options(options_text: str | None) -> dict[str, str] | None:
    """``"A: meniscal tear\\nB: normal"`` (lines or ``;``-separated) -> ``{"A": ..., "B": ...}``.

    Entries without a label (``A:``, ``A.``, ``A)``) are labelled A, B, ... in order; empty text
    gives None (no options).
    """
    parts = [p.strip() for p in re.split(r"[\n;]", options_text or "") if p.strip()]
    options: dict[str, str] = {}
    for i, part in enumerate(parts):
        match = _OPTION.match(part)
        key, text = (match.group(1).upper(), match.group(2)) if match else (chr(65 + i), part)
        options[key] = text
    return options or None


class DemoSession:
    """One model and the scan it is asked about.

    Args:
        model: The model that answers.
    """

    def __init__(self, model: MedVLM) -> None:
        self.model = model
        self.path: Path | None = None
        self.scan: Any = None

    @property
    def is_3d(self) -> bool:
        """Whether the loaded scan is a volume."""
        return self.scan is not None and self.scan.ndim == 4

    def n_slices(self, axis: int = 2) -> int:
        """Slices along ``axis`` (1 for a 2D scan)."""
        self._require()
        return int(self.scan.shape[axis + 1]) if self.is_3d else 1

    def clamp(self, index: float, axis: int = 2) -> int:
        """``index`` as a valid slice index along ``axis`` (a slider's value may overshoot)."""
        return min(self.n_slices(axis) - 1, max(0, int(index)))

    def load(self, path: str | Path) -> dict[str, Any]:
        """Load a scan (``medvl.scans.load_scan``: DICOM, NIfTI, PNG/JPG); the same path again
        is not re-read.

        Returns:
            ``path``, ``format``, ``modality``, ``ndim`` (2 or 3), ``shape`` (spatial),
            ``spacing`` (mm) and ``n_slices`` (along axis 2; 1 for 2D).
        """
        path = Path(path)
        if self.path != path or self.scan is None:
            self.scan, self.path = load_scan(path), path
        meta = self.scan.meta
        return {
            "path": str(path),
            "format": meta.get("format"),
            "modality": meta.get("modality"),
            "ndim": 3 if self.is_3d else 2,
            "shape": [int(s) for s in self.scan.shape[1:]],
            "spacing": [round(float(s), 4) for s in meta["spacing"]],
            "n_slices": self.n_slices(2),
        }

    def slice_image(
        self, index: int | None = None, axis: int = 2, box: Sequence[float] | None = None
    ) -> Image.Image:
        """The slice ``index`` along ``axis`` (default the middle; ignored for 2D), with ``box``
        (medvl's normalised scan coordinates: 6 numbers for 3D, 4 for 2D) outlined where it
        crosses the slice. A box of the wrong dimensionality is not drawn."""
        self._require()
        if not self.is_3d:
            flat = box if box and len(box) == 4 else None
            return draw_box(scan_to_image(self.scan), flat, colour=BOX_COLOUR)
        spacing = [float(s) for s in self.scan.meta["spacing"]]
        view = volume_to_slice(self.scan, index, axis, spacing=spacing)
        drawn = view.image_box(box) if box and len(box) == 6 else None
        return draw_box(view.image, drawn, colour=BOX_COLOUR)

    def box_slice(self, box: Sequence[float], axis: int = 2) -> int:
        """The slice along ``axis`` through the middle of a normalised 3D box."""
        self._require()
        n = self.n_slices(axis)
        return min(n - 1, max(0, int((box[axis] + box[axis + 3]) / 2 * n)))

    def answer(
        self,
        question: str,
        answer_type: str | None = None,
        options_text: str | None = None,
        index: int | None = None,
        axis: int = 2,
        **answer_kwargs: Any,
    ) -> tuple[str, str, list[float] | None, Image.Image]:
        """Ask about the loaded scan (``MedVLM.answer``).

        Args:
            question: The question.
            answer_type: As for ``MedVLM.answer``; None, ``""`` or ``"auto"`` lets it choose.
            options_text: Choice options (see :func:`parse_options`).
            index: The slice to draw the overlay on; default the middle of the answer's box
                (the middle slice without a box).
            axis: The axis slices are taken across.
            **answer_kwargs: Passed to ``MedVLM.answer`` (``max_new_tokens``...).

        Returns:
            ``(reasoning, answer, box, overlay)``: texts (``""`` when absent), the box in
            normalised scan coordinates or None, and the slice image with the box drawn.
        """
        self._require()
        result = self.model.answer(
            self._question(question, answer_type, options_text), **answer_kwargs
        )
        box = [float(v) for v in result.box] if result.box is not None else None
        if index is None and box is not None and self.is_3d and len(box) == 6:
            index = self.box_slice(box, axis)
        overlay = self.slice_image(index, axis, box)
        return result.reasoning or "", result.answer or "", box, overlay

    def stream_answer(
        self,
        question: str,
        answer_type: str | None = None,
        options_text: str | None = None,
        **answer_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the reply so far (growing text) as ``MedVLM.stream_answer`` generates it."""
        self._require()
        text = ""
        asked = self._question(question, answer_type, options_text)
        for piece in self.model.stream_answer(asked, **answer_kwargs):
            text += piece
            yield text

    def _question(self, text: str, answer_type: str | None, options_text: str | None) -> Any:
        from medvl.model.inputs import Question

        kind = None if not answer_type or answer_type == "auto" else answer_type
        return Question(self.scan, text, parse_options(options_text), kind)

    def _require(self) -> None:
        if self.scan is None:
            raise ValueError("no scan loaded: call load(path) first")

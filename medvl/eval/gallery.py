"""The worst cases of a run, drawn: the scan with the predicted and the true box, the question,
the reasoning, the answer and the reference.

`worst_cases` orders prediction rows from worst to best (wrong answers first, then the lowest
IoU, then the weakest reasoning); `case_picture` draws one row's scan — a 2D image whole, a
volume's axial slice through the middle of the reference box (else the predicted one, else the
middle slice) — with the reference box in green and the predicted box in red, through the
view's coordinate map; `gallery_html` turns rows into self-contained HTML cards (pictures
inlined as PNG data URIs), the gallery of ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["TRUE_COLOUR", "PRED_COLOUR", "case_picture", "gallery_html", "worst_cases"]

logger = logging.getLogger(__name__)

TRUE_COLOUR = (0, 200, 0)
PRED_COLOUR = (255, 0, 0)


def _badness(row: Mapping[str, Any]) -> tuple[float, float, float]:
    correct = row.get("correct")
    rank = 0.0 if correct is False else 1.0 if correct is None else 2.0
    iou = row.get("iou")
    f1 = row.get("reasoning_f1")
    return (rank, float(iou) if isinstance(iou, (int, float)) else 1.0,
            float(f1) if isinstance(f1, (int, float)) else 1.0)  # fmt: skip


def worst_cases(rows: Sequence[Mapping[str, Any]], k: int = 8) -> list[Mapping[str, Any]]:
    """The ``k`` worst rows: wrong before unscored before right, then by IoU and reasoning F1
    (lowest first); ties keep the file's order."""
    return sorted(rows, key=_badness)[: max(0, k)]


def case_picture(
    image: str | os.PathLike,
    reference_box: Sequence[float] | None = None,
    box: Sequence[float] | None = None,
    size: int = 320,
    index: int | None = None,
) -> Image.Image:
    """The scan at ``image`` with the reference box (green) and the predicted box (red).

    Args:
        image: A scan file or DICOM series folder (`medvl.scans.load_scan`).
        reference_box: The true box, normalised (4 numbers for 2D, 6 for a volume).
        box: The predicted box, normalised.
        size: The picture's longer side in pixels.
        index: A volume's axial slice (default: through the middle of the reference box, else
            the predicted one, else the middle slice); ignored for 2D. A 3D box is drawn on
            the slices it spans.

    Raises:
        medvl.scans.ScanError: The scan cannot be read.
    """
    from medvl.scans import load_scan
    from medvl.scans.views import draw_box, scan_to_image, volume_to_slice

    scan = load_scan(image)
    if scan.ndim == 4:
        guide = next((b for b in (reference_box, box) if b is not None and len(b) == 6), None)
        depth = int(scan.shape[3])
        if index is None and guide is not None:
            index = min(depth - 1, int((guide[2] + guide[5]) / 2 * depth))
        index = None if index is None else min(depth - 1, max(0, int(index)))
        spacing = [float(s) for s in scan.meta["spacing"]]
        view = volume_to_slice(scan, index, 2, spacing=spacing, size=size)
        picture = view.image
        boxes = [(view.image_box(b) if b is not None and len(b) == 6 else None, c)
                 for b, c in ((reference_box, TRUE_COLOUR), (box, PRED_COLOUR))]  # fmt: skip
    else:
        picture = scan_to_image(scan)
        scale = size / max(picture.size)
        shape = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(shape, Image.BILINEAR)
        boxes = [(b if b is not None and len(b) == 4 else None, c)
                 for b, c in ((reference_box, TRUE_COLOUR), (box, PRED_COLOUR))]  # fmt: skip
    for b, colour in boxes:
        if b is not None:
            picture = draw_box(picture, b, colour=colour)
    return picture


def png_data_uri(picture: Image.Image | bytes) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image or of PNG bytes."""
    if isinstance(picture, Image.Image):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        picture = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(picture).decode("ascii")


def _field(label: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else repr(value)
    return f"<dt>{html.escape(label)}</dt><dd>{html.escape(text)}</dd>"


def _card(row: Mapping[str, Any], root: Path | None, size: int) -> str:
    picture = ""
    if root is not None and row.get("image"):
        try:
            img = case_picture(root / str(row["image"]), row.get("reference_box"),
                               row.get("box"), size)  # fmt: skip
            alt = html.escape(f"scan of {row.get('id')}")
            picture = f'<img src="{png_data_uri(img)}" alt="{alt}">'
        except Exception as e:  # a missing or unreadable scan must not lose the report
            logger.warning("gallery: %s: %s", row.get("id"), e)
            picture = f'<p class="missing">scan not shown: {html.escape(str(e))}</p>'
    options = row.get("options")
    if isinstance(options, Mapping):
        options = "; ".join(f"{k}: {v}" for k, v in options.items())
    verdict = {True: "right", False: "wrong", None: "not scored"}.get(row.get("correct"), "")
    metrics = ", ".join(f"{k} {row[k]:.3f}" for k in ("iou", "evidence_iou", "reasoning_f1")
                        if isinstance(row.get(k), (int, float)))  # fmt: skip
    fields = "".join([
        _field("question", row.get("question")), _field("options", options),
        _field("reasoning", row.get("reasoning")), _field("answer", row.get("answer")),
        _field("reference", row.get("reference")), _field("metrics", metrics),
    ])  # fmt: skip
    title = html.escape(f"{row.get('id')} · {row.get('answer_type')} · {verdict}")
    return (f'<figure class="case {html.escape(verdict.replace(" ", "-"))}">{picture}'
            f"<figcaption><h3>{title}</h3><dl>{fields}</dl></figcaption></figure>")  # fmt: skip


def gallery_html(
    rows: Sequence[Mapping[str, Any]],
    root: str | os.PathLike | None,
    k: int = 8,
    size: int = 320,
) -> str:
    """HTML cards of the ``k`` worst rows (`worst_cases`); scans are read from ``root`` (the
    manifest's folder) and inlined; without a root, or for a scan that cannot be read, the card
    says so and keeps its text."""
    base = Path(root) if root is not None else None
    cards = [_card(row, base, size) for row in worst_cases(rows, k)]
    legend = (
        f'<p class="legend"><span style="color:rgb{TRUE_COLOUR}">■</span> reference '
        f'box <span style="color:rgb{PRED_COLOUR}">■</span> predicted box</p>'
    )
    return legend + '<div class="gallery">' + "".join(cards) + "</div>"

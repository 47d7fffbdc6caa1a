"""The report's plots, drawn with matplotlib's Agg canvas directly (no pyplot, so no global
state changes in a notebook) and returned as PNG bytes for the caller to write atomically."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["accuracy_bars", "iou_boxplot"]


def accuracy_bars(summary: dict, key: str, title: str, xlabel: str) -> bytes | None:
    """PNG bytes of grouped accuracy bars with Wilson CI error bars, one bar per model (None
    when no group has a value). ``summary`` is `summarize_models`'s output, ``key`` one of its
    ``accuracy_by_*`` tables."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = summary["model_order"]
    groups = sorted({g for n in names for g in summary["models"][n][key]})
    if not groups:
        return None
    fig = Figure(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(names)) + 2), 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        cells = [summary["models"][name][key].get(g) for g in groups]
        est = [c["estimate"] if c and c.get("n") else np.nan for c in cells]
        lo = [c["estimate"] - c["low"] if c and c.get("n") else 0 for c in cells]
        hi = [c["high"] - c["estimate"] if c and c.get("n") else 0 for c in cells]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, est, width, yerr=[lo, hi],
               capsize=3, label=name)  # fmt: skip
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (Wilson 95% CI)")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def iou_boxplot(data: dict[str, np.ndarray]) -> bytes | None:
    """PNG bytes of a box plot of per-sample IoU per model (None when no model has IoU)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = {n: v for n, v in data.items() if v.size}
    if not data:
        return None
    fig = Figure(figsize=(max(4.0, 1.5 * len(data) + 2), 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot(list(data.values()), showmeans=True)
    ax.set_xticks(np.arange(1, len(data) + 1))
    ax.set_xticklabels(list(data))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("IoU per sample")
    ax.set_title("IoU distribution (triangle: mean)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()

"""The report's plots, drawn with matplotlib's Agg canvas directly (no pyplot, so no global
state changes in a notebook) and returned as PNG bytes for the caller to write atomically."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["accuracy_bars", "iou_boxplot", "length_by_correctness", "overlap_boxplot"]


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
    return overlap_boxplot(data, "IoU")


def overlap_boxplot(data: dict[str, np.ndarray], metric: str) -> bytes | None:
    """PNG bytes of a box plot of a per-sample overlap in [0, 1] (IoU, Dice) per model (None
    when no model has a value)."""
    data = {n: v for n, v in data.items() if v.size}
    if not data:
        return None
    fig, ax = _figure(max(4.0, 1.5 * len(data) + 2))
    ax.boxplot(list(data.values()), showmeans=True)
    ax.set_xticks(np.arange(1, len(data) + 1))
    ax.set_xticklabels(list(data))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"{metric} per sample")
    ax.set_title(f"{metric} distribution (triangle: mean)")
    return _png(fig)


def length_by_correctness(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes | None:
    """PNG bytes of reasoning length (generated tokens) for right and wrong answers, a box pair
    per model (``{model: (lengths of right answers, lengths of wrong ones)}``; None when no
    model has both)."""
    data = {n: (r, w) for n, (r, w) in data.items() if r.size or w.size}
    if not data:
        return None
    fig, ax = _figure(max(5.0, 2.2 * len(data) + 2))
    positions, values, labels = [], [], []
    for i, (name, (right, wrong)) in enumerate(data.items()):
        for j, (label, v) in enumerate((("right", right), ("wrong", wrong))):
            if v.size:
                positions.append(3 * i + j + 1)
                values.append(v)
                labels.append(f"{name}\n{label}")
    ax.boxplot(values, positions=positions, showmeans=True)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels, fontsize="small")
    ax.set_ylabel("generated tokens per reply")
    ax.set_title("Reasoning length of right and wrong answers (triangle: mean)")
    return _png(fig)


def _figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()

"""The report's Markdown: tables of `summarize_models`'s numbers, plots linked by path."""

from __future__ import annotations

import math

__all__ = ["render_markdown"]


def _fmt_acc(cell: dict | None) -> str:
    if not cell or not cell.get("n"):
        return "—"
    return (
        f"{cell['estimate']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] "
        f"({cell['successes']}/{cell['n']})"
    )


def _fmt_mean(cell: dict | None) -> str:
    if not cell:
        return "—"
    if "estimate" not in cell:
        return f"median {_num(cell['median'])} (n={cell['n']})"
    return f"{cell['estimate']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] (n={cell['n']})"


def _fmt_kappa(cell: dict | None) -> str:
    if not cell:
        return "—"
    k = cell["kappa"]
    return f"{'—' if k is None or math.isnan(k) else f'{k:.3f}'} (n={cell['n']})"


def _num(v: float, digits: int = 3) -> str:
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return lines


REASONING_COLUMNS = (
    ("reasoning_recall", "step recall"), ("reasoning_precision", "step precision"),
    ("reasoning_f1", "step F1"), ("reasoning_order", "order"),
    ("reasoning_per_100_tokens", "matched / 100 tokens"),
)  # fmt: skip


def _modality_by_type(summary: dict) -> list[str]:
    names = summary["model_order"]
    ms = summary["models"]
    cells = {(n, mod, kind): cell for n in names
             for mod, kinds in (ms[n].get("accuracy_by_modality_and_type") or {}).items()
             for kind, cell in kinds.items()}  # fmt: skip
    if len({mod for _, mod, _ in cells}) < 2:
        return []  # one modality: the answer-type table below says it all
    out = ["", "## Accuracy by modality and answer type", ""]
    keys = sorted({(mod, kind) for _, mod, kind in cells})
    rows = [[mod, kind, *(_fmt_acc(cells.get((n, mod, kind))) for n in names)]
            for mod, kind in keys]  # fmt: skip
    return out + _table(["modality", "answer type", *names], rows)


def _grounding_section(summary: dict) -> list[str]:
    names = summary["model_order"]
    ms = summary["models"]
    rows = []
    for n in names:
        m = ms[n]
        grounded, plain = m.get("grounded_accuracy"), m.get("accuracy_where_grounded")
        hd_px = m.get("hd95_px")
        if not (grounded or hd_px or m.get("masks_missing")):
            continue
        gap = "—"
        if grounded and plain and grounded.get("n"):
            gap = f"{plain['estimate'] - grounded['estimate']:+.3f}"
        missing = m.get("masks_missing") or []
        listed = f"{len(missing)}" + (
            f" ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})" if missing else "")
        if missing and m.get("masks_predicted") is False:
            listed = f"all {len(missing)}: no mask predicted (no mask head), no Dice or HD95"
        rows.append([
            n, _fmt_acc(plain), _fmt_acc(grounded), gap,
            f"{_num(hd_px['median'])} (n={hd_px['n']})" if hd_px else "—", listed,
        ])  # fmt: skip
    if not rows:
        return []
    out = ["", "## Grounding", ""]
    out.append(
        "Grounded accuracy: the answer is right *and* the box it rests on overlaps the sample's "
        "evidence box at IoU >= 0.5; the gap is right answers given for the wrong region. "
        "Grounding questions count as right at IoU >= 0.5 (Acc@0.5) in the accuracy tables. "
        "HD95 px: masks without physical spacing (PNG/JPG). Missing masks count as Dice 0; a "
        "model that predicted no mask at all gets no Dice or HD95."
    )
    out.append("")
    out += _table(["model", "accuracy (same rows)", "grounded accuracy", "gap", "HD95 px median",
                   "masks missing"], rows)  # fmt: skip
    return out


def _reasoning_section(summary: dict, plots: dict[str, str]) -> list[str]:
    names = summary["model_order"]
    ms = summary["models"]
    if not any(ms[n].get("reasoning_f1") for n in names):
        return []
    out = ["", "## Reasoning quality", ""]
    out.append(
        "Generated `<think>` steps matched one-to-one to the sample's reference steps "
        "(`medvl.eval.reasoning`): recall = matched / reference steps (completeness), precision "
        "= matched / generated steps, order = share of matched pairs in the reference's order, "
        "consistent = the reasoning's conclusion is the answer. F1 right / wrong: step F1 of "
        "the samples answered right / wrong."
    )
    out.append("")
    rows = []
    for n in names:
        m = ms[n]
        by = m.get("reasoning_f1_by_correct") or {}
        rows.append([n, *(_fmt_mean(m.get(k)) for k, _ in REASONING_COLUMNS),
                     _fmt_acc(m.get("reasoning_consistent")), _fmt_mean(by.get("right")),
                     _fmt_mean(by.get("wrong"))])  # fmt: skip
    out += _table(["model", *(label for _, label in REASONING_COLUMNS), "consistent",
                   "F1 right", "F1 wrong"], rows)  # fmt: skip
    if "reasoning_length" in plots:
        out += ["", f"![Reasoning length by correctness]({plots['reasoning_length']})"]
    return out


def render_markdown(summary: dict, plots: dict[str, str]) -> str:
    """``report.md``'s text from `summarize_models`'s output and the plots' relative paths."""
    names = summary["model_order"]
    ms = summary["models"]
    out = ["# Evaluation report", ""]
    out.append(
        "Accuracy: Wilson 95% CI over samples with `correct` not null, shown as "
        "`estimate [low, high] (correct/n)`. Means: bootstrap 95% percentile CI "
        f"({summary['settings']['bootstrap_resamples']} resamples, seed "
        f"{summary['settings']['seed']})."
    )
    out += ["", "## Overview", ""]
    rows = []
    for n in names:
        m = ms[n]
        hd = m["hd95"]
        rows.append([
            n, str(m["samples"]), _fmt_acc(m["accuracy"]), _fmt_acc(m["format_rate"]),
            _fmt_mean(m["iou"]), _fmt_mean(m["dice"]),
            f"{_num(hd['median'])} (n={hd['n']})" if hd else "—",
            _num(m["latency_s"]["mean"]) if m["latency_s"] else "—",
            _num(m["tokens"]["mean"], 1) if m["tokens"] else "—",
        ])  # fmt: skip
    out += _table(
        ["model", "samples", "accuracy", "format rate", "IoU mean", "Dice mean", "HD95 mm median",
         "latency s (mean)", "tokens (mean)"], rows,
    )  # fmt: skip
    extra = [m for m in ("token_f1", "bleu", "rouge_l", "severity_abs_error")
             if any(ms[n].get(m) for n in names)]  # fmt: skip
    if extra:
        out += [""]
        rows = [[n, *(_fmt_mean(ms[n].get(m)) for m in extra)] for n in names]
        header = ["model", *extra]
        if any(ms[n].get("same_findings") for n in names):
            header.append("same findings")
            for row, n in zip(rows, names, strict=True):
                row.append(_fmt_acc(ms[n].get("same_findings")))
        out += _table(header, rows)
    scales = sorted({s for n in names for s in ms[n].get("severity_kappa") or {}})
    if scales:
        out += [
            "",
            "Severity, quadratic-weighted kappa (an unreadable grade counts as the "
            "farthest grade; the mean error above counts it at the worst error):",
            "",
        ]
        rows = [[f"0-{s}", *(_fmt_kappa((ms[n].get("severity_kappa") or {}).get(s))
                             for n in names)] for s in scales]  # fmt: skip
        out += _table(["scale", *names], rows)
    out += _modality_by_type(summary)
    hedges = [f"{n} {ms[n]['hedged']['successes']}/{ms[n]['hedged']['n']}" for n in names
              if (ms[n].get("hedged") or {}).get("n")]  # fmt: skip
    if hedges:
        out += ["", "Hedged replies (two options offered, or both yes and no; scored wrong): "
                + ", ".join(hedges) + "."]
    unreadable = {n: ms[n].get("unreadable") or {} for n in names}
    if any(unreadable.values()):
        out += ["", "Samples whose scan could not be read (not answered, not scored):", ""]
        out += _table(["model", "sample", "why"], [[n, i, why.splitlines()[0]]
                      for n in names for i, why in unreadable[n].items()])  # fmt: skip
    out += _grounding_section(summary)
    out += _reasoning_section(summary, plots)
    for key, title, plot in (
        ("accuracy_by_answer_type", "Accuracy by answer type", "accuracy_by_answer_type"),
        ("accuracy_by_modality", "Accuracy by modality", "accuracy_by_modality"),
    ):
        groups = sorted({g for n in names for g in ms[n][key]})
        out += ["", f"## {title}", ""]
        rows = [[g, *(_fmt_acc(ms[n][key].get(g)) for n in names)] for g in groups]
        out += _table([key.rsplit("_by_", 1)[1].replace("_", " "), *names], rows)
        if plot in plots:
            out += ["", f"![{title}]({plots[plot]})"]
    out += ["", "## IoU", ""]
    if "iou" in plots:
        out += [f"![IoU distribution]({plots['iou']})"]
    else:
        out += ["No sample has an IoU."]
    if "dice" in plots:
        out += ["", f"![Dice distribution]({plots['dice']})"]
    if summary["comparisons"]:
        ref = summary["reference_model"]
        out += ["", f"## Paired comparisons against {ref}", ""]
        out.append(
            f"On the sample ids both files hold; Δ = model − {ref}. Correctness: McNemar test, "
            "Newcombe CI of the accuracy difference. IoU and reasoning F1: paired bootstrap of "
            "the mean difference. n: pairs used."
        )
        out.append("")
        rows = []
        for c in summary["comparisons"]:
            for metric, label in (("accuracy", "accuracy"), ("iou", "IoU mean"),
                                  ("reasoning_f1", "reasoning F1")):  # fmt: skip
                cmp = c.get(metric)
                if cmp is None and metric != "accuracy":
                    continue  # no boxes or no reasoning scores on both sides: no row
                if cmp is None:
                    rows.append([c["model"], label, "—", "—", "—", "—", "0",
                                 str(c["common_ids"])])  # fmt: skip
                    continue
                ci = "—" if math.isnan(cmp["low"]) else f"[{cmp['low']:+.3f}, {cmp['high']:+.3f}]"
                rows.append([c["model"], label, f"{cmp['difference']:+.3f}", ci,
                             _fmt_p(cmp["p_value"]), cmp["method"], str(cmp["n"]),
                             str(c["common_ids"])])  # fmt: skip
        out += _table(["model", "metric", f"Δ vs {ref}", "95% CI", "p", "test", "n",
                       "common ids"], rows)  # fmt: skip
    out.append("")
    return "\n".join(out)

"""The evaluation report: per-case CSV, JSON summary, box plots, and a Markdown page with the best and worst cases.

``REPORT_DIR/`` holds ``metrics.csv`` (one row per case and class), ``summary.json`` (per class and
metric: mean, median, std, min, max, n, n_nan, n_inf), ``boxplot.png``, ``cases/<case>.png`` (truth
beside prediction for a few slices of every case) and ``report.md`` linking them.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from lumbarseg.evaluation.metrics import METRICS, summarize
from lumbarseg.io.atomic import atomic_path, write_text

PathLike = Union[str, Path]
CSV_FIELDS = ["case", "class", *METRICS]
BOX_METRICS = (("dice", "Dice"), ("hd95", "HD95 (mm)"), ("assd", "ASSD (mm)"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
    return "" if value is None else str(value)


def write_csv(rows: Sequence[Dict[str, Any]], path: PathLike) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
    write_text(path, buffer.getvalue())


def boxplot_png(rows: Sequence[Dict[str, Any]], path: PathLike, classes: Sequence[str]) -> None:
    """Dice, HD95 and ASSD per class across cases (finite values), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(BOX_METRICS), figsize=(4.2 * len(BOX_METRICS), 3.8))
    for ax, (metric, title) in zip(axes, BOX_METRICS):
        data = [[float(r[metric]) for r in rows if r["class"] == c and math.isfinite(float(r[metric]))]
                for c in classes]
        ax.boxplot([d if d else [math.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(classes) + 1))
        ax.set_xticklabels(classes)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if metric == "dice":
            ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=110, format="png")
    plt.close(fig)


def _markdown(summary: Dict[str, Dict[str, Any]], ranked: List[tuple], pictures: Dict[str, str],
              title: str, notes: Sequence[str], count: int) -> str:
    lines = [f"# {title}", "", f"{len(ranked)} case(s) evaluated.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Summary (mean ± std, median; finite values)", "",
              "| class | Dice | IoU | HD95 (mm) | ASSD (mm) | volume diff (mL) |", "|---|---|---|---|---|---|"]
    for name, stats in summary.items():
        cells = []
        for metric in ("dice", "iou", "hd95", "assd", "volume_diff_ml"):
            s = stats[metric]
            text = "–" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}, {s['median']:.3f}"
            if s["n_inf"]:
                text += f" ({s['n_inf']} one-sided empty)"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Empty-structure rule: both empty -> NaN (left out); one empty -> Dice 0, distances inf "
              "(counted as 'one-sided empty').", "", "![box plots](boxplot.png)", ""]
    scored = [(case, score) for case, score in ranked if score is not None]
    for heading, chosen in (("Worst cases", scored[:count]), ("Best cases", scored[::-1][:count])):
        lines += [f"## {heading} (mean foreground Dice)", ""]
        for case, score in chosen:
            lines += [f"### {case}: {score:.3f}", ""]
            if case in pictures:
                lines += [f"![{case}]({pictures[case]})", ""]
    return "\n".join(lines) + "\n"


def write_report(out_dir: PathLike, rows: Sequence[Dict[str, Any]], classes: Sequence[str],
                 case_scores: Dict[str, Optional[float]], pictures: Dict[str, str], title: str = "lumbarseg evaluation",
                 notes: Sequence[str] = (), best_worst: int = 3) -> Dict[str, Dict[str, Any]]:
    """Write metrics.csv, summary.json, boxplot.png and report.md into ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    summary = summarize(rows)
    write_csv(rows, out_dir / "metrics.csv")
    document = {"classes": list(classes), "cases": len(case_scores), "summary": summary,
                "empty_rule": "both empty: NaN (excluded); one empty: Dice/IoU 0, HD95/ASSD inf (n_inf)"}
    write_text(out_dir / "summary.json", json.dumps(document, indent=2, allow_nan=False) + "\n")
    boxplot_png(rows, out_dir / "boxplot.png", list(classes))
    ranked = sorted(case_scores.items(), key=lambda kv: (kv[1] is None, kv[1] if kv[1] is not None else 0.0))
    write_text(out_dir / "report.md", _markdown(summary, ranked, pictures, title, notes, best_worst))
    return summary

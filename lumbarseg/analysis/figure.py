"""The report picture: the mid-sagittal slice with level names and the measurement lines drawn."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from lumbarseg.analysis.levels import colour_array
from lumbarseg.io.atomic import atomic_path
from lumbarseg.io.intensity import normalize

PathLike = Union[str, Path]
LINE_STYLES = {  # measurement line -> (colour, width)
    "anterior_height": ("white", 0.8), "middle_height": ("white", 0.8), "posterior_height": ("white", 0.8),
    "canal_ap": ("#00e5ff", 1.4), "listhesis": ("#7CFC00", 1.6),
    "superior_endplate": ("#ff00ff", 1.2), "inferior_endplate": ("#ff00ff", 1.2),
}
LABEL_MARGIN_MM = 45.0


def spine_png(report: object, path: PathLike, dpi: int = 110) -> None:
    """Write ``<case>_spine.png``: grey image (or mask) with coloured levels, names, lines, alignment."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    view = report.view  # type: ignore[attr-defined]
    sy, sz = view.spacing[1], view.spacing[2]
    rows, cols = view.levels.shape
    height_mm, width_mm = rows * sy, cols * sz
    extent = (-0.5 * sz, width_mm - 0.5 * sz, height_mm - 0.5 * sy, -0.5 * sy)
    levels = report.levels  # type: ignore[attr-defined]
    points = [p[1] for lv in levels for s, e in lv.lines.values() for p in (s, e)]
    points += [lv.centre_mm[2] for lv in levels]
    labelled = np.nonzero((view.levels > 0).any(axis=0))[0]
    left = max(min(points) - LABEL_MARGIN_MM, -0.5 * sz - LABEL_MARGIN_MM)
    right = min(width_mm, max(max(points), labelled.max() * sz if labelled.size else 0.0) + 15.0)
    scale = 7.0 / max(height_mm, 1.0)
    fig, ax = plt.subplots(figsize=((right - left) * scale + 0.4, height_mm * scale + 0.6))
    if view.image is not None:
        ax.imshow(normalize(view.image), cmap="gray", extent=extent,
                  interpolation="nearest")
    else:
        ax.imshow(np.where(view.classes > 0, 0.25, 0.0), cmap="gray", vmin=0, vmax=1, extent=extent)
    rgba = np.zeros((rows, cols, 4), np.float32)
    values = view.levels
    rgba[..., :3] = colour_array(levels)[values] / 255.0
    rgba[..., 3] = np.where(values > 0, 0.45, 0.0)
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    for level in levels:
        for name, (start, end) in level.lines.items():
            colour, width = LINE_STYLES.get(name, ("white", 0.8))
            ax.plot([start[1], end[1]], [start[0], end[0]], color=colour, linewidth=width)
        anterior = min((p[1] for s, e in level.lines.values() for p in (s, e)), default=level.centre_mm[2])
        text = level.name + ("*" if level.partial else "")
        colour = "#ff5050" if level.flags else ("#ffd24d" if level.kind != "disc" else "#66ccff")
        ax.text(anterior - 3.0, level.centre_mm[1], text, color=colour, fontsize=8 if level.kind == "disc" else 9,
                ha="right", va="center", fontweight="bold" if level.kind != "disc" else "normal")
    alignment = report.alignment  # type: ignore[attr-defined]
    parts = [f"{report.case}" if report.case else "spine"]  # type: ignore[attr-defined]
    if alignment.get("lordosis_deg") is not None:
        parts.append(f"lordosis L1-L5 {alignment['lordosis_deg']:.1f}°")
    if alignment.get("lordosis_l1_s1_deg") is not None:
        parts.append(f"L1-S1 {alignment['lordosis_l1_s1_deg']:.1f}°")
    ax.set_title("  ·  ".join(parts), fontsize=9, color="white")
    ax.set_xlim(left, right)
    ax.set_ylim(height_mm, 0)
    ax.set_facecolor("black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.99, 0.005, "* partial in view; red: flagged\nheights white, canal cyan, slip green,\n"
            "lordosis endplates magenta; each level\nmeasured on its own mid-sagittal slice",
            transform=ax.transAxes, color="#bbbbbb", fontsize=6, ha="right", va="bottom")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=dpi, format="png", facecolor="black")
    plt.close(fig)

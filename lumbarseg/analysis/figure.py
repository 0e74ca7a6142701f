"""The report picture: the mid-sagittal slice with level names and the measurement lines drawn.

Drawn with OpenCV like the prediction overlay (fast, no plotting stack), at a fixed physical
scale (``MM_PER_PIXEL``) so the anatomy keeps its proportions whatever the voxel spacing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple, Union

import cv2
import numpy as np

from lumbarseg.analysis.levels import colour_array
from lumbarseg.io.intensity import normalize
from lumbarseg.io.slices import write_png

PathLike = Union[str, Path]
MM_PER_PIXEL = 0.4
LABEL_MARGIN_MM = 40.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX
LINE_STYLES = {  # measurement line -> (RGB colour, thickness)
    "anterior_height": ((255, 255, 255), 1), "middle_height": ((255, 255, 255), 1),
    "posterior_height": ((255, 255, 255), 1), "canal_ap": ((0, 229, 255), 2), "listhesis": ((124, 252, 0), 2),
    "superior_endplate": ((255, 0, 255), 2), "inferior_endplate": ((255, 0, 255), 2),
}
FLAGGED, BONE, DISC = (255, 80, 80), (255, 210, 77), (102, 204, 255)


def _px(point: Tuple[float, float], left_mm: float) -> Tuple[int, int]:
    """(row, col) mm -> (x, y) pixel of the picture."""
    return int(round((point[1] - left_mm) / MM_PER_PIXEL)), int(round(point[0] / MM_PER_PIXEL))


def spine_png(report: Any, path: PathLike) -> None:
    """Write ``<case>_spine.png`` (:func:`spine_picture`)."""
    write_png(path, spine_picture(report))


def spine_picture(report: Any) -> np.ndarray:
    """The report's picture (RGB uint8): grey image (or mask) with coloured levels, names, lines, alignment."""
    view, levels = report.view, report.levels
    sy, sz = view.spacing[1], view.spacing[2]
    rows, cols = view.levels.shape
    height_mm, width_mm = rows * sy, cols * sz
    points = [p[1] for lv in levels for s, e in lv.lines.values() for p in (s, e)] + [lv.centre_mm[2] for lv in levels]
    labelled = np.nonzero((view.levels > 0).any(axis=0))[0]
    left = max(min(points) - LABEL_MARGIN_MM, 0.0)
    right = min(width_mm, max(max(points), labelled.max() * sz if labelled.size else 0.0) + 15.0)
    size = (int(round(width_mm / MM_PER_PIXEL)), int(round(height_mm / MM_PER_PIXEL)))
    if view.image is not None:
        grey = (normalize(view.image) * 255).astype(np.uint8)
    else:
        grey = np.where(view.classes > 0, 60, 0).astype(np.uint8)
    base = cv2.resize(np.repeat(grey[..., None], 3, axis=2), size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    values = cv2.resize(view.levels, size, interpolation=cv2.INTER_NEAREST)
    colours = colour_array(levels)[values].astype(np.float32)
    alpha = np.where(values > 0, 0.45, 0.0)[..., None]
    picture = (base * (1 - alpha) + colours * alpha).astype(np.uint8)
    x0, x1 = int(left / MM_PER_PIXEL), int(right / MM_PER_PIXEL)
    picture = np.ascontiguousarray(picture[:, x0:x1])
    for level in levels:
        for name, (start, end) in level.lines.items():
            colour, thickness = LINE_STYLES.get(name, ((255, 255, 255), 1))
            cv2.line(picture, _px(start, left), _px(end, left), colour, thickness, cv2.LINE_AA)
    for level in levels:
        anterior = min((p[1] for s, e in level.lines.values() for p in (s, e)), default=level.centre_mm[2])
        text = level.name + ("*" if level.partial else "") + ("?" if level.uncertain else "")
        scale = 0.5 if level.kind != "disc" else 0.4
        (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
        x, y = _px((level.centre_mm[1], anterior - 3.0), left)
        colour = FLAGGED if level.flags else (BONE if level.kind != "disc" else DISC)
        cv2.putText(picture, text, (max(2, x - w), y + h // 2), _FONT, scale, colour, 1, cv2.LINE_AA)
    return _frame(picture, report)


def _frame(picture: np.ndarray, report: Any) -> np.ndarray:
    """A title strip above the picture and a legend strip below it."""
    width = picture.shape[1]
    parts = [report.case or "spine"]
    alignment = report.alignment
    if alignment.get("lordosis_deg") is not None:
        parts.append(f"lordosis L1-L5 {alignment['lordosis_deg']:.1f} deg")
    if alignment.get("lordosis_l1_s1_deg") is not None:
        parts.append(f"L1-S1 {alignment['lordosis_l1_s1_deg']:.1f} deg")
    title = np.zeros((28, width, 3), np.uint8)
    cv2.putText(title, "  ".join(parts), (6, 19), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    strips = [title]
    if report.levels_confidence != "high":
        warning = np.zeros((22, width, 3), np.uint8)
        cv2.putText(warning, "LEVEL NAMES UNCERTAIN (?): see levels_confidence_notes", (6, 15), _FONT, 0.4,
                    FLAGGED, 1, cv2.LINE_AA)
        strips.append(warning)
    legend = np.zeros((42, width, 3), np.uint8)
    notes = ["* partial in view, ? uncertain name, red name: flagged; each level on its mid-sagittal slice",
             "heights white, canal cyan, slip green, lordosis endplates magenta"]
    for row, note in enumerate(notes):
        cv2.putText(legend, note, (6, 15 + 18 * row), _FONT, 0.33, (190, 190, 190), 1, cv2.LINE_AA)
    return np.concatenate([*strips, picture, legend])

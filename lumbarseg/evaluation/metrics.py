"""Per-case, per-class overlap and surface-distance metrics in millimetres.

Surface distances come from medpy (``medpy.metric.binary.hd95`` / ``assd`` with the voxel
spacing), computed on the bounding box of both masks plus a one-voxel margin (exact: every
surface voxel is inside it) so large volumes stay fast.

Empty structures (the rule, as in nnU-Net's evaluation; MONAI's ``ignore_empty`` behaves alike):

==========================  ======  ======  ===============  ================
ground truth / prediction   Dice    IoU     HD95, ASSD       counted in means
==========================  ======  ======  ===============  ================
both empty                  NaN     NaN     NaN              no (nothing to find)
one empty                   0       0       inf              Dice/IoU yes; distances counted as ``n_inf``
both present                value   value   value (mm)       yes
==========================  ======  ======  ===============  ================

Summaries (:func:`summarize`) ignore NaN and report how many cases had an infinite distance.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

METRICS = ("dice", "iou", "hd95", "assd", "volume_pred_ml", "volume_gt_ml", "volume_diff_ml", "volume_diff_rel")


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G|); NaN when both are empty."""
    total = int(pred.sum()) + int(gt.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P∩G| / |P∪G|; NaN when both are empty."""
    union = int(np.logical_or(pred, gt).sum())
    return float("nan") if union == 0 else int(np.logical_and(pred, gt).sum()) / union


def _cropped(pred: np.ndarray, gt: np.ndarray):
    both = np.logical_or(pred, gt)
    coords = np.argwhere(both)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, both.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return np.pad(pred[box], 1), np.pad(gt[box], 1)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """HD95 and ASSD in mm (medpy); NaN when both are empty, inf when exactly one is."""
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return {"hd95": float("nan"), "assd": float("nan")}
    if has_pred != has_gt:
        return {"hd95": float("inf"), "assd": float("inf")}
    from medpy.metric import binary

    p, g = _cropped(pred.astype(bool), gt.astype(bool))
    spacing = [float(s) for s in spacing]
    return {"hd95": float(binary.hd95(p, g, voxelspacing=spacing)),
            "assd": float(binary.assd(p, g, voxelspacing=spacing))}


def class_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """All metrics of one binary structure (``pred``/``gt`` boolean arrays of one grid)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    v_pred, v_gt = float(pred.sum()) * voxel_ml, float(gt.sum()) * voxel_ml
    out = {"dice": dice(pred, gt), "iou": iou(pred, gt), **surface_distances(pred, gt, spacing)}
    out.update(volume_pred_ml=v_pred, volume_gt_ml=v_gt, volume_diff_ml=v_pred - v_gt,
               volume_diff_rel=(v_pred - v_gt) / v_gt if v_gt > 0 else float("nan"))
    return out


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], classes: Sequence[str],
                 case: str = "") -> List[Dict[str, Any]]:
    """One row per foreground class for class-index masks ``pred`` and ``gt`` (same grid)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    rows = []
    for index, name in enumerate(classes):
        if index:
            rows.append({"case": case, "class": name, **class_metrics(pred == index, gt == index, spacing)})
    return rows


def _stats(values: List[float]) -> Dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    arr = np.array(finite, dtype=np.float64)
    return {
        "mean": float(arr.mean()) if finite else None, "median": float(np.median(arr)) if finite else None,
        "std": float(arr.std()) if finite else None, "min": float(arr.min()) if finite else None,
        "max": float(arr.max()) if finite else None, "n": len(finite),
        "n_nan": sum(1 for v in values if math.isnan(v)), "n_inf": sum(1 for v in values if math.isinf(v)),
    }


def summarize(rows: Sequence[Dict[str, Any]], metrics: Sequence[str] = METRICS) -> Dict[str, Dict[str, Any]]:
    """{class: {metric: {mean, median, std, min, max, n, n_nan, n_inf}}} over cases (finite values only)."""
    classes: List[str] = []
    for row in rows:
        if row["class"] not in classes:
            classes.append(row["class"])
    return {name: {m: _stats([float(r[m]) for r in rows if r["class"] == name]) for m in metrics}
            for name in classes}


class SegmentationMetrics:
    """Accumulates per-case rows (MONAI-style metric object; :func:`case_metrics` is its functional twin)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.rows: List[Dict[str, Any]] = []

    def __call__(self, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], case: str) -> List[Dict[str, Any]]:
        rows = case_metrics(pred, gt, spacing, self.classes, case)
        self.rows.extend(rows)
        return rows

    def summary(self) -> Dict[str, Dict[str, Any]]:
        return summarize(self.rows)

    def case_scores(self, metric: str = "dice") -> Dict[str, Optional[float]]:
        """Mean of ``metric`` over the classes of each case (NaN ignored), for ranking best/worst cases."""
        out: Dict[str, Optional[float]] = {}
        for case in dict.fromkeys(r["case"] for r in self.rows):
            values = [float(r[metric]) for r in self.rows if r["case"] == case and not math.isnan(float(r[metric]))]
            out[case] = float(np.mean(values)) if values else None
        return out

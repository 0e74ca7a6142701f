"""Prediction against expert, level by level: Dice per level, measurement differences, name agreement.

Levels are paired by name (both masks are named from their own lowest disc). For each
measurement: mean absolute difference, bias (mean of prediction - expert) and Bland-Altman 95 %
limits of agreement (bias +- 1.96 SD of the differences).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lumbarseg.analysis.levels import name_from_spider_value
from lumbarseg.analysis.spine import SpineReport

COMPARED = ("anterior_height_mm", "middle_height_mm", "posterior_height_mm", "canal_ap_mm", "disc_height_index",
            "wedge_ratio", "listhesis_mm")
ALIGNMENT = ("lordosis_deg", "lordosis_l1_s1_deg")


def level_dice(pred: SpineReport, truth: SpineReport) -> Dict[str, float]:
    """Dice of each level present in both reports' levels volumes (same grid), by name."""
    p, t = pred.levels_volume.array, truth.levels_volume.array
    out = {}
    for level in truth.levels:
        other = pred.level(level.name)
        if other is None:
            continue
        a, b = p == other.value, t == level.value
        total = int(a.sum()) + int(b.sum())
        out[level.name] = 2.0 * int((a & b).sum()) / total if total else math.nan
    return out


def compare(pred: SpineReport, truth: SpineReport, case: str = "") -> List[Dict[str, Any]]:
    """One row per level name and measurement present on both sides: values and difference."""
    rows: List[Dict[str, Any]] = []
    dice = level_dice(pred, truth)
    for level in truth.levels:
        other = pred.level(level.name)
        if other is None or other.partial or level.partial:
            continue
        for key in COMPARED:
            a, b = other.measurements.get(key), level.measurements.get(key)
            if a is not None and b is not None:
                rows.append({"case": case, "level": level.name, "kind": level.kind, "measurement": key,
                             "prediction": float(a), "expert": float(b), "difference": float(a) - float(b),
                             "dice": dice.get(level.name), "uncertain": other.uncertain or level.uncertain})
    for key in ALIGNMENT:
        a, b = pred.alignment.get(key), truth.alignment.get(key)
        if a is not None and b is not None:
            rows.append({"case": case, "level": "L1-L5" if key == "lordosis_deg" else "L1-S1", "kind": "alignment",
                         "measurement": key, "prediction": float(a), "expert": float(b),
                         "difference": float(a) - float(b), "dice": None,
                         "uncertain": "uncertain" in (pred.levels_confidence, truth.levels_confidence)})
    return rows


def agreement(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (structure kind, measurement): n, mean absolute difference, bias and 95 % limits of agreement."""
    groups: Dict[tuple, List[float]] = {}
    for row in rows:
        groups.setdefault((row["kind"], row["measurement"]), []).append(row["difference"])
    out = []
    for (kind, key), diffs in sorted(groups.items()):
        d = np.asarray(diffs, float)
        sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        bias = float(d.mean())
        out.append({"kind": kind, "measurement": key, "n": int(len(d)), "mad": float(np.abs(d).mean()),
                    "bias": bias, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd})
    return out


def name_agreement(report: SpineReport, raw: np.ndarray) -> Optional[Dict[str, Any]]:
    """How often a report's level names match SPIDER instance labels in ``raw`` (same grid as the report).

    Each level takes the majority raw value under its voxels; None when ``raw`` holds no SPIDER
    instance values (e.g. a 3-class export).
    """
    values = report.levels_volume.array
    checked, agreed, mismatches = 0, 0, []
    for level in report.levels:
        if level.kind == "sacrum":
            continue
        under = raw[values == level.value]
        under = under[(under > 0) & (under != 100)]
        if under.size == 0:
            continue
        named = name_from_spider_value(int(np.bincount(under.astype(np.int64)).argmax()))
        if named is None:
            continue
        checked += 1
        if named[0] == level.name:
            agreed += 1
        else:
            mismatches.append(f"{level.name}->{named[0]}")
    if not checked:
        return None
    return {"levels": checked, "agree": agreed, "fraction": agreed / checked, "mismatches": mismatches}


def level_counts(pred: SpineReport, truth: SpineReport) -> Dict[str, int]:
    """Complete and partial level counts on both sides."""
    return {"prediction_levels": len(pred.levels), "expert_levels": len(truth.levels),
            "prediction_complete": sum(not lv.partial for lv in pred.levels),
            "expert_complete": sum(not lv.partial for lv in truth.levels)}

"""Intensity normalisation, the same for dataset building and prediction."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

# Written into datasets and model metadata so a model is always fed the way it was trained.
DEFAULT_NORMALIZATION: Dict[str, Any] = {"method": "percentile", "low": 0.5, "high": 99.5}


def normalize(array: np.ndarray, spec: Dict[str, Any] = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Scale a whole volume to [0, 1] between robust percentiles (outliers clipped) -> float32.

    Percentiles are taken over the whole volume, not per slice, so slice-to-slice contrast is
    kept. A constant volume maps to zeros.
    """
    if spec.get("method") != "percentile":
        raise ValueError(f"unknown normalisation method {spec.get('method')!r}")
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, [float(spec["low"]), float(spec["high"])])
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

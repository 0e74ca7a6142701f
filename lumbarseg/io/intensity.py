"""Intensity normalisation, the same for dataset building and prediction."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import cc3d
import cv2
import numpy as np

from lumbarseg.io.volume import bounding_box

# Written into datasets and model metadata so a model is always fed the way it was trained.
DEFAULT_NORMALIZATION: Dict[str, Any] = {"method": "percentile", "low": 0.5, "high": 99.5}
NO_SIGNAL_MM3 = 1000.0  # a fill-value region at least this large is no image (1 mL)
NO_SIGNAL_SOLID_MM = 5.0  # ... and solid: it holds a square of this side in its slice
NO_SIGNAL_MARGIN_MM = 20.0  # around the labelled voxels at the lowest value, the region examined


def normalize(array: np.ndarray, spec: Dict[str, Any] = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Scale a whole volume to [0, 1] between robust percentiles (outliers clipped) -> float32.

    Percentiles are taken over the whole volume, not per slice, so slice-to-slice contrast is
    kept. A constant volume maps to zeros. Integer volumes of up to 16 bits (the usual MRI: int16,
    uint16, uint8) take a histogram instead of sorting: the same percentiles as ``np.percentile`` (its default
    'linear' method), and every intensity level mapped once through a lookup table, bit for bit
    the values of the float path (tests/io/test_intensity.py checks both).
    """
    if spec.get("method") != "percentile":
        raise ValueError(f"unknown normalisation method {spec.get('method')!r}")
    quantiles = (float(spec["low"]), float(spec["high"]))
    levels = _integer_levels(np.asarray(array))
    if levels is not None:
        offset, counts = levels
        lo, hi = _histogram_percentiles(counts, offset, quantiles)
        values = np.arange(offset, offset + len(counts), dtype=np.float32)  # every level, exact in float32
        if hi <= lo:
            return np.zeros(np.shape(array), dtype=np.float32)
        table = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        return table[_shifted(np.asarray(array), offset)]
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, quantiles)
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def no_signal(array: np.ndarray, spacing: Sequence[float], labelled: Optional[np.ndarray] = None,
              min_mm3: float = NO_SIGNAL_MM3, solid_mm: float = NO_SIGNAL_SOLID_MM) -> np.ndarray:
    """Voxels of a fill value (bool): where the volume's lowest value fills solid regions of ``min_mm3`` or more.

    Zero-filled bands (a field of view padded by the scanner or by a conversion) carry no image; a model may
    still label them, so prediction sets them to background. Solid: what is left of the lowest value after an
    opening by a ``solid_mm`` square in each slice (axis 0), so that dark tissue that happens to take the lowest
    value (a black disc, cortical bone) and touches the air by a thin path is not part of it. With ``labelled``
    (bool, the voxels a model labelled) only the box around those of them at the lowest value, with a
    ``NO_SIGNAL_MARGIN_MM`` margin, is examined: the rest of the answer would change no label."""
    out = np.zeros(array.shape, dtype=bool)
    if array.size == 0:
        return out
    low = array == array.min()
    voxels = max(1, int(np.ceil(min_mm3 / float(np.prod(spacing)))))
    seeds = low if labelled is None else low & labelled
    if np.count_nonzero(low) < voxels or not seeds.any():
        return out
    box = tuple(slice(max(0, b.start - m), b.stop + m) for b, m in
                zip(bounding_box(seeds), (int(np.ceil(NO_SIGNAL_MARGIN_MM / s)) for s in spacing)))
    size = [max(1, int(round(solid_mm / s))) for s in spacing[1:]]
    square = np.ones(size, np.uint8)
    solid = np.stack([cv2.morphologyEx(plane, cv2.MORPH_OPEN, square) for plane in low[box].astype(np.uint8)])
    out[box] = cc3d.dust(solid, threshold=voxels, connectivity=6).astype(bool)
    return out


def _integer_levels(array: np.ndarray) -> Optional[Tuple[int, np.ndarray]]:
    """(lowest value, count of each value from it on) for an integer volume of up to 16 bits, else None."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 2 or array.size == 0:
        return None
    low = int(array.min())
    return low, np.bincount(_shifted(array, low).ravel())


def _shifted(array: np.ndarray, low: int) -> np.ndarray:
    """``array - low`` as non-negative integers (signed types widened so that the difference cannot wrap)."""
    if low == 0:
        return array
    if array.dtype.kind == "u":
        return array - array.dtype.type(low)
    return array.astype(np.int32) - low


def _histogram_percentiles(counts: np.ndarray, offset: int, quantiles: Sequence[float]) -> Tuple[np.float64, ...]:
    """``np.percentile(values, quantiles)`` (method 'linear') of the values whose histogram is ``counts``.

    As numpy: virtual index (n - 1) * q / 100 between the sorted values of ranks floor and floor + 1,
    interpolated in float64 (``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` when ``g >= 0.5``).
    """
    n = int(counts.sum())
    cumulative = np.cumsum(counts)
    out = []
    for q in quantiles:
        virtual = (n - 1) * (np.float64(q) / 100)
        if virtual >= n - 1:
            below = above = n - 1
        elif virtual < 0:
            below = above = 0
        else:
            below = int(np.floor(virtual))
            above = below + 1
        gamma = virtual - np.floor(virtual)
        a, b = (np.float64(offset + int(np.searchsorted(cumulative, rank, side="right"))) for rank in (below, above))
        diff = b - a
        out.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)
    return tuple(out)

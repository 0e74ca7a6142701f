"""Input channels of a 2.5D model: each slice's neighbours at the model's ``slice_offsets`` (mm).

A neighbour between two slices of the volume is interpolated linearly along the slice axis, so a model
trained on 0.9 mm slices reads a routine 4 mm protocol at the same distances; positions past the first
or last slice take that edge slice, as the 2.5D datasets do (:mod:`lumbarseg.data.context`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

Neighbours = Tuple[np.ndarray, np.ndarray, np.ndarray]


def neighbours(count: int, slice_mm: float, offsets_mm: Sequence[float]) -> Neighbours:
    """For slice k and channel c: the slices below and above the wanted position and the weight of the one above,
    each (count, channels)."""
    offsets = np.asarray(offsets_mm, dtype=np.float64) / float(slice_mm)
    positions = np.clip(np.round(np.arange(count)[:, None] + offsets[None, :], 6), 0, count - 1)
    below = np.floor(positions).astype(np.intp)
    above = np.minimum(below + 1, count - 1)
    return below, above, (positions - below).astype(np.float32)


def channel_batch(stack: np.ndarray, table: Neighbours, start: int, stop: int) -> np.ndarray:
    """Slices ``start:stop`` of ``stack`` (S, H, W) as a (n, channels, H, W) float32 batch."""
    below, above, weight = (part[start:stop] for part in table)
    batch = stack[below].astype(np.float32, copy=False)  # fancy indexing already gave a new array to blend in
    blend = weight > 0
    if blend.any():
        w = weight[blend][:, None, None]
        batch[blend] += w * (stack[above[blend]] - batch[blend])
    return batch

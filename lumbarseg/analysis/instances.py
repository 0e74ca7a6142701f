"""Split a semantic spine mask into 3D instances: one label per intervertebral disc and per vertebra.

Works on a class-index array in lumbarseg's canonical RIP orientation (axis 0 right->left, axis 1
inferior, axis 2 posterior). Discs are the 3D connected components of the disc class (:mod:`.discs`),
counted from the bottom along the column by :mod:`.sequence`, which may add virtual discs the mask
missed. Vertebral bodies are seeded in the column between consecutive discs, real or virtual (the slab
above one disc's mid-plane and below the next one's, near the line joining their centres); every other
vertebra voxel (pedicles, arches, processes, which may touch the next vertebra at the facet joints) joins
the body it is connected to by the shortest path inside the vertebra mask, flooded on a coarse (~2 mm)
grid for speed; voxels with no path take the nearest. Structures are numbered by position from the
bottom: disc k (k = 1: L5-S1) and vertebra k, the vertebra just above disc k; vertebra 0 lies below
L5-S1 (the sacrum, when segmented).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from lumbarseg.analysis.column import Column
from lumbarseg.analysis.discs import DiscFrame, label_components, split_discs
from lumbarseg.analysis.sequence import Count, count_levels

Spacing = Tuple[float, float, float]
_COARSE_MM = 2.0
_MIN_BODY_FRACTION = 0.15  # of the median body-seed volume
_MIN_MM3 = 50.0


@dataclass
class Instances:
    """Instance labels in the canonical grid: ``discs`` value k = disc k, ``vertebrae`` value k + 1 =
    vertebra k (0 = below L5-S1); ``bodies`` = the vertebral-body seeds, same values; ``count``: the disc
    positions, with virtual discs and the confidence of the count."""

    discs: np.ndarray
    vertebrae: np.ndarray
    bodies: np.ndarray
    count: Count

    @property
    def frames(self) -> Dict[int, DiscFrame]:
        """Disc frames by position, virtual discs included."""
        return self.count.frames

    @property
    def vertebra_positions(self) -> List[int]:
        return [int(v) - 1 for v in np.unique(self.bodies) if v > 0]


def _between_discs(rows: np.ndarray, cols: np.ndarray, start: np.ndarray, end: np.ndarray, radius: float,
            below: Optional[DiscFrame], above: Optional[DiscFrame]) -> np.ndarray:
    """Sagittal grid points (rows (R, 1), cols (1, C) in mm) between two disc mid-planes, near the segment."""
    inside = np.ones((rows.shape[0], cols.shape[1]), bool)
    if below is not None:
        inside &= (rows - below.centre[1]) * below.normal[0] + (cols - below.centre[2]) * below.normal[1] > 0
    if above is not None:
        inside &= (rows - above.centre[1]) * above.normal[0] + (cols - above.centre[2]) * above.normal[1] < 0
    axis = end - start
    length = float(np.linalg.norm(axis))
    if length == 0:
        return np.zeros((rows.shape[0], cols.shape[1]), bool)
    axis = axis / length
    along = (rows - start[0]) * axis[0] + (cols - start[1]) * axis[1]
    across = np.abs((cols - start[1]) * axis[0] - (rows - start[0]) * axis[1])
    return inside & (along >= 0) & (along <= length) & (across <= radius)


def body_seeds(vertebra: np.ndarray, frames: Dict[int, DiscFrame], spacing: Spacing) -> np.ndarray:
    """Vertebral-body seeds: value k + 1 for vertebra k (above disc k; k = 0 below the lowest disc)."""
    ids = sorted(frames)
    if not ids:
        return np.zeros(vertebra.shape, np.int32)
    rows = (np.arange(vertebra.shape[1]) * spacing[1])[:, None]
    cols = (np.arange(vertebra.shape[2]) * spacing[2])[None, :]
    plane = np.zeros(vertebra.shape[1:], np.int32)
    centres = [frames[k].centre[1:] for k in ids]
    gaps = [float(np.linalg.norm(b - a)) for a, b in zip(centres, centres[1:])]
    gap = float(np.median(gaps)) if gaps else 1.2 * frames[ids[0]].depth_mm
    for position in range(0, len(ids) + 1):
        below = frames[ids[position - 1]] if position >= 1 else None
        above = frames[ids[position]] if position < len(ids) else None
        if below is not None and above is not None:
            start, end = below.centre[1:], above.centre[1:]
        elif below is not None:  # above the top disc
            start, end = below.centre[1:], below.centre[1:] + gap * below.normal
        else:  # below the lowest disc
            start, end = above.centre[1:] - gap * above.normal, above.centre[1:]
        depths = [f.depth_mm for f in (below, above) if f is not None]
        plane[_between_discs(rows, cols, start, end, 0.4 * min(depths), below, above)] = position + 1
    seeds = np.where(vertebra, plane[None], 0).astype(np.int32)
    # keep each seed's largest connected piece, drop seeds too small to be a body
    out = np.zeros_like(seeds)
    volumes = {}
    for value, box in enumerate(ndimage.find_objects(seeds), start=1):
        if box is None:
            continue
        labels, count, sizes = label_components(seeds[box] == value)
        if count:
            biggest = int(np.argmax(sizes[1:]) + 1)
            out[box][labels == biggest] = value
            volumes[value] = int(sizes[biggest])
    if volumes:
        median = float(np.median(list(volumes.values())))
        for value, size in volumes.items():
            if size < _MIN_BODY_FRACTION * median or size * float(np.prod(spacing)) < _MIN_MM3:
                out[out == value] = 0
    return out


def _block_max(array: np.ndarray, factors: Tuple[int, ...]) -> np.ndarray:
    """Maximum over blocks of ``factors`` voxels (a coarse grid that keeps every thin part)."""
    for axis, factor in enumerate(factors):
        if factor == 1:
            continue
        parts = [np.take(array, np.arange(i, array.shape[axis], factor), axis=axis) for i in range(factor)]
        out = parts[0].copy()
        for part in parts[1:]:
            region = tuple(slice(0, n) for n in part.shape)
            np.maximum(out[region], part, out=out[region])
        array = out
    return array


def flood_vertebrae(vertebra: np.ndarray, seeds: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Every vertebra voxel labelled with the body it reaches first inside the mask (coarse grid)."""
    factors = tuple(max(1, int(round(_COARSE_MM / s))) for s in spacing)
    mask = _block_max(vertebra.astype(np.uint8), factors) > 0
    labels = _block_max(seeds, factors)
    labels[~mask] = 0
    for _ in range(4 * sum(labels.shape)):
        grown = ndimage.maximum_filter(labels, size=3)
        new = (labels == 0) & mask & (grown > 0)
        if not new.any():
            break
        labels[new] = grown[new]
    if (labels > 0).any() and ((labels == 0) & mask).any():  # pieces with no path to a body: nearest
        _, nearest = ndimage.distance_transform_edt(labels == 0, sampling=[f * s for f, s in zip(factors, spacing)],
                                                    return_distances=True, return_indices=True)
        labels = labels[tuple(nearest)]
    fine = np.zeros(vertebra.shape, np.int32)
    index = np.nonzero(vertebra)
    fine[index] = labels[tuple(i // f for i, f in zip(index, factors))]
    fine[seeds > 0] = seeds[seeds > 0]
    return fine


def split_instances(index: np.ndarray, spacing: Spacing, vertebra_class: int, disc_class: int,
                    check: Optional[Callable[[Dict[int, DiscFrame]], None]] = None,
                    column: Optional[Column] = None) -> Instances:
    """Disc and vertebra instances of a canonical class-index array (best cropped to the spine first);
    ``check`` may reject the discs (e.g. a spine that does not run head-foot) before the vertebrae;
    ``column`` orders the discs along the spine's curve (:mod:`.sequence`)."""
    components, frames = split_discs(index == disc_class, spacing)
    if check is not None:
        check(frames)
    vertebra = index == vertebra_class
    count = count_levels(frames, vertebra, spacing, column)
    lut = np.zeros(max(frames, default=0) + 1, np.int32)
    for component, position in count.positions.items():
        lut[component] = position
    seeds = body_seeds(vertebra, count.frames, spacing)
    vertebrae = flood_vertebrae(vertebra, seeds, spacing) if seeds.any() else np.zeros(index.shape, np.int32)
    return Instances(lut[components], vertebrae, seeds, count)

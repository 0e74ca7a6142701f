"""The spinal column in a mask: its axis traced along the canal, and which structures lie on it.

The network sees one sagittal slice at a time and was trained on central slices: in far-lateral slices
(iliac bones, psoas) and in the pelvis it can mark patches as vertebra or disc that belong to no spine.
Counted as levels, each would shift every name. The canal is what the network finds most reliably, one
tube that follows the spine's curve, so its centre, row by row (head to foot), is the column's axis
(:func:`trace`). A vertebra or disc component belongs to the column when it reaches the column's core
(:meth:`Column.core`): within ``MIDLINE_MM`` of the axis left-right and between ``POSTERIOR_MM`` behind and
``ANTERIOR_MM`` in front of it (every vertebral body and disc crosses the midline; a patch beside the spine
does not), and when it is chained to the canal head-foot: it lies within ``BEYOND_MM`` of the canal's
extent, or within ``CHAIN_MM`` of a structure that is (the canal may stop short of the lowest discs; a blob
in the pelvis lies far below them). Without a canal nothing is removed.

numpy and cc3d only (no scipy): ``predict`` runs :func:`keep_column` on every volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cc3d
import numpy as np

from lumbarseg.io.volume import bounding_box

Spacing = Tuple[float, float, float]
MIDLINE_MM = 10.0  # vertebral bodies and discs cross the midline; lateral patches stay >= 18 mm off it (dev scans)
ANTERIOR_MM = 70.0  # the canal's centre to the front of the deepest lumbar body, with a margin
POSTERIOR_MM = 70.0  # to the tips of the spinous processes
BEYOND_MM = 20.0  # head-foot, past the canal's ends
CHAIN_MM = 10.0  # head-foot, between neighbours of the column (a disc is 4-15 mm thick)
MIN_CANAL_MM = 20.0  # a shorter canal traces no column


@dataclass(frozen=True)
class Column:
    """The column's axis: for every row of the grid, its left-right and front-back position (mm)."""

    lateral_mm: np.ndarray  # (rows,) canonical axis 0 position x spacing
    ap_mm: np.ndarray  # (rows,) canonical axis 2 position x spacing
    first: int  # first and last rows the canal is found on
    last: int
    spacing: Spacing

    def core(self, shape: Sequence[int], box: Optional[Tuple[slice, ...]] = None) -> np.ndarray:
        """Voxels near the axis (bool, ``shape``, or the part of it in ``box``): where every vertebra and disc of
        the column reaches."""
        s, r, c = box if box is not None else tuple(slice(0, n) for n in shape)
        s_mm, _, c_mm = self.spacing
        lateral = np.abs(np.arange(s.start, s.stop)[:, None] * s_mm - self.lateral_mm[None, r]) <= MIDLINE_MM
        ahead = self.ap_mm[r, None] - np.arange(c.start, c.stop)[None, :] * c_mm  # > 0: in front of the axis
        ap = (ahead <= ANTERIOR_MM) & (ahead >= -POSTERIOR_MM)
        return lateral[:, :, None] & ap[None, :, :]

    def position_mm(self, row: float) -> float:
        """Distance along the axis (mm) from the grid's top row to ``row`` (head-foot order along the curve)."""
        steps = np.hypot(np.hypot(np.diff(self.lateral_mm), np.diff(self.ap_mm)), self.spacing[1])
        along = np.concatenate([[0.0], np.cumsum(steps)])
        return float(np.interp(row, np.arange(len(along)), along))


def trace(canal: np.ndarray, spacing: Sequence[float]) -> Optional[Column]:
    """The axis of a canonical (RIP) canal mask: its centre on every row it holds, interpolated between them
    and held past its ends; None when the canal spans less than ``MIN_CANAL_MM`` head-foot."""
    if not canal.any():
        return None
    box = bounding_box(canal)
    s, r, c = (i + b.start for i, b in zip(np.nonzero(canal[box]), box))
    rows = canal.shape[1]
    count = np.bincount(r, minlength=rows)
    held = np.flatnonzero(count)
    if (held[-1] - held[0] + 1) * spacing[1] < MIN_CANAL_MM:
        return None
    grid = np.arange(rows)
    lateral = np.bincount(r, weights=s, minlength=rows)[held] / count[held]
    ap = np.bincount(r, weights=c, minlength=rows)[held] / count[held]
    return Column(np.interp(grid, held, lateral) * spacing[0], np.interp(grid, held, ap) * spacing[2],
                  int(held[0]), int(held[-1]), tuple(float(x) for x in spacing))  # type: ignore[arg-type]


def _components_on(mask: np.ndarray, core: np.ndarray) -> Tuple[np.ndarray, List[int], List[Tuple[int, int]]]:
    """3D components of ``mask`` (face connectivity): labels, those reaching ``core``, and their row ranges."""
    labels = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=6)
    boxes = cc3d.statistics(labels)["bounding_boxes"]
    reach = [int(v) for v in np.unique(labels[core & mask]) if v]
    return labels, reach, [(boxes[v][1].start, boxes[v][1].stop - 1) for v in reach]


def keep_column(index: np.ndarray, spacing: Sequence[float], vertebra: int, disc: int,
                column: Optional[Column]) -> np.ndarray:
    """A canonical class-index array without the vertebra and disc components off ``column`` (set to 0);
    unchanged without a column (no canal, or too short a one: :func:`trace`)."""
    if column is None or not index.any():
        return index
    box = bounding_box(index > 0)
    labelled = index[box]
    core = column.core(index.shape, box)
    found = [_components_on(labelled == value, core) for value in (vertebra, disc)]
    ranges = {(i, v): span for i, (_, reach, spans) in enumerate(found) for v, span in zip(reach, spans)}
    beyond, chain = BEYOND_MM / spacing[1], CHAIN_MM / spacing[1]
    first, last = column.first - box[1].start, column.last - box[1].start
    kept = {key for key, (low, high) in ranges.items() if high >= first - beyond and low <= last + beyond}
    while True:  # chain the rest head-foot to what is kept
        more = {key for key, (low, high) in ranges.items() if key not in kept and any(
            low - chain <= ranges[k][1] and ranges[k][0] <= high + chain for k in kept)}
        if not more:
            break
        kept |= more
    out = index.copy()
    for i, (value, (labels, _, _)) in enumerate(zip((vertebra, disc), found)):
        keep = np.zeros(int(labels.max()) + 1, bool)
        keep[[v for j, v in kept if j == i]] = True
        out[box][(labelled == value) & ~keep[labels]] = 0
    return out

"""The spinal column in a mask: its axis traced along the canal, and which structures lie on it.

The network sees one sagittal slice at a time and was trained on central slices: in far-lateral slices
(iliac bones, psoas) and in the pelvis it can mark patches as vertebra or disc that belong to no spine.
Counted as levels, each would shift every name. The canal is what the network finds most reliably, one
tube that follows the spine's curve, so its centre, row by row (head to foot), is the column's axis
(:func:`trace`). A vertebra or disc component belongs to the column when it reaches the column's core
(:meth:`Column.core`): within ``MIDLINE_MM`` of the axis left-right, between ``POSTERIOR_MM`` behind and
``ANTERIOR_MM`` in front of it, and within ``BEYOND_MM`` of the canal's head-foot extent. Every vertebral
body and disc crosses the midline; a patch beside the spine does not. A disc must also touch a vertebra of
the column (within ``DISC_GAP_MM`` head-foot), as discs lie between bodies. Without a canal nothing is removed.

numpy and cc3d only (no scipy): ``predict`` runs :func:`keep_column` on every volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cc3d
import numpy as np

Spacing = Tuple[float, float, float]
MIDLINE_MM = 10.0  # vertebral bodies and discs cross the midline; lateral patches stay >= 18 mm off it (dev scans)
ANTERIOR_MM = 70.0  # the canal's centre to the front of the deepest lumbar body, with a margin
POSTERIOR_MM = 70.0  # to the tips of the spinous processes
BEYOND_MM = 20.0  # head-foot, past the canal's ends
DISC_GAP_MM = 3.0  # a disc's distance to the nearest vertebra, head-foot
MIN_CANAL_MM = 20.0  # a shorter canal traces no column


@dataclass(frozen=True)
class Column:
    """The column's axis: for every row of the grid, its left-right and front-back position (mm)."""

    lateral_mm: np.ndarray  # (rows,) canonical axis 0 position x spacing
    ap_mm: np.ndarray  # (rows,) canonical axis 2 position x spacing
    first: int  # first and last rows the canal is found on
    last: int
    spacing: Spacing

    def core(self, shape: Sequence[int]) -> np.ndarray:
        """Voxels near the axis (bool, ``shape``): where every vertebra and disc of the column reaches."""
        s_mm, r_mm, c_mm = self.spacing
        lateral = np.abs(np.arange(shape[0])[:, None] * s_mm - self.lateral_mm[None, :]) <= MIDLINE_MM
        ahead = self.ap_mm[:, None] - np.arange(shape[2])[None, :] * c_mm  # > 0: in front of the axis
        ap = (ahead <= ANTERIOR_MM) & (ahead >= -POSTERIOR_MM)
        rows = np.arange(shape[1])
        beyond = BEYOND_MM / r_mm
        ap &= ((rows >= self.first - beyond) & (rows <= self.last + beyond))[:, None]
        return lateral[:, :, None] & ap[None, :, :]

    def position_mm(self, row: float) -> float:
        """Distance along the axis (mm) from the grid's top row to ``row`` (head-foot order along the curve)."""
        steps = np.hypot(np.hypot(np.diff(self.lateral_mm), np.diff(self.ap_mm)), self.spacing[1])
        along = np.concatenate([[0.0], np.cumsum(steps)])
        return float(np.interp(row, np.arange(len(along)), along))


def trace(canal: np.ndarray, spacing: Sequence[float]) -> Optional[Column]:
    """The axis of a canonical (RIP) canal mask: its centre on every row it holds, interpolated between them
    and held past its ends; None when the canal spans less than ``MIN_CANAL_MM`` head-foot."""
    s, r, c = np.nonzero(canal)
    if r.size == 0:
        return None
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


def _touching(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The 3D components (face connectivity) of ``mask`` with at least one voxel in ``region``."""
    labels = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=6)
    keep = np.zeros(int(labels.max()) + 1, dtype=bool)
    keep[np.unique(labels[region & mask])] = True
    keep[0] = False
    return keep[labels]


def _grow_rows(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` grown by ``voxels`` along the rows (head-foot) both ways."""
    out = mask.copy()
    for k in range(1, voxels + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    return out


def keep_column(index: np.ndarray, spacing: Sequence[float], vertebra: int, disc: int,
                column: Optional[Column]) -> np.ndarray:
    """A canonical class-index array without the vertebra and disc components off ``column`` (set to 0);
    unchanged without a column (no canal, or too short a one: :func:`trace`)."""
    if column is None:
        return index
    core = column.core(index.shape)
    bone = index == vertebra
    kept_bone = _touching(bone, core)
    near_bone = _grow_rows(kept_bone, max(1, int(round(DISC_GAP_MM / spacing[1]))))
    discs = index == disc
    kept_discs = _touching(discs, core & near_bone)
    out = index.copy()
    out[(bone & ~kept_bone) | (discs & ~kept_discs)] = 0
    return out

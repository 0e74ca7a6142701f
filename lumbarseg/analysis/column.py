"""The spinal column in a mask: its axis traced along the canal, and which structures lie on it.

The network sees one sagittal slice at a time and was trained on central slices: in far-lateral slices
(iliac bones, psoas) and in the pelvis it can mark patches as vertebra or disc that belong to no spine.
Counted as levels, each would shift every name. The canal is what the network finds most reliably, one
tube that follows the spine's curve, so its centre, row by row (head to foot), is the column's axis
(:func:`trace`). A vertebra or disc component belongs to the column when it reaches the column's core
(:meth:`Column.core`): within ``MIDLINE_MM`` of the axis left-right, between ``POSTERIOR_MM`` behind and
``ANTERIOR_MM`` in front of it, and within ``BEYOND_MM`` of the canal's head-foot extent. Every vertebral
body and disc crosses the midline; a patch beside the spine does not. Without a canal nothing is removed.

Between two consecutive discs of the column lies a vertebral body. Where the network left most of one
unlabelled (on routine scans it can take a low, wedge-shaped L5 for sacrum), :func:`fill_bodies` labels it:
the convex hull of the two discs, slice by slice.

numpy, cc3d and OpenCV only (no scipy): ``predict`` runs both on every volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cc3d
import cv2
import numpy as np

Spacing = Tuple[float, float, float]
MIDLINE_MM = 10.0  # vertebral bodies and discs cross the midline; lateral patches stay >= 18 mm off it (dev scans)
ANTERIOR_MM = 70.0  # the canal's centre to the front of the deepest lumbar body, with a margin
POSTERIOR_MM = 70.0  # to the tips of the spinous processes
BEYOND_MM = 20.0  # head-foot, past the canal's ends
MIN_CANAL_MM = 20.0  # a shorter canal traces no column
MIN_DISC_MM3 = 500.0  # disc pieces that count for :func:`fill_bodies` (lumbar discs hold 5-15 mL)
BODY_GAP = 1.5  # two discs at most this times the median spacing apart have one body between them
MIN_BODY_COVER = 0.5  # a body less covered than this is filled


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


def keep_column(index: np.ndarray, spacing: Sequence[float], vertebra: int, disc: int,
                column: Optional[Column]) -> np.ndarray:
    """A canonical class-index array without the vertebra and disc components off ``column`` (set to 0);
    unchanged without a column (no canal, or too short a one: :func:`trace`)."""
    if column is None:
        return index
    core = column.core(index.shape)
    out = index.copy()
    for value in (vertebra, disc):
        mask = index == value
        out[mask & ~_touching(mask, core)] = 0
    return out


def _disc_pieces(discs: np.ndarray, spacing: Sequence[float], column: Column) -> List[Tuple[np.ndarray, float]]:
    """Disc components of at least ``MIN_DISC_MM3`` as (mask, position along the axis in mm), head to foot."""
    labels = cc3d.connected_components(np.ascontiguousarray(discs, dtype=np.uint8), connectivity=6)
    sizes = np.bincount(labels.ravel())
    voxel = float(np.prod(spacing))
    pieces = []
    for value in np.flatnonzero(sizes * voxel >= MIN_DISC_MM3):
        if value == 0:
            continue
        mask = labels == value
        row = float(np.nonzero(mask.any(axis=(0, 2)))[0].mean())
        pieces.append((mask, column.position_mm(row)))
    return sorted(pieces, key=lambda piece: piece[1])


def _hull_between(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Per sagittal slice, the convex hull of two discs, on the slices that hold either. A disc cut thin in a
    slice (under half its largest slice area: an edge or a fragment) lends that slice its nearest full
    footprint instead, so that the hull keeps both endplates."""
    out = np.zeros(upper.shape, bool)
    areas = [d.sum(axis=(1, 2)) for d in (upper, lower)]
    full = [np.flatnonzero(a >= 0.5 * a.max()) for a in areas]
    for k in np.flatnonzero((areas[0] > 0) | (areas[1] > 0)):
        planes = [d[k] if k in f else d[f[np.argmin(np.abs(f - k))]] for d, f in zip((upper, lower), full)]
        points = np.argwhere(planes[0] | planes[1])[:, ::-1].astype(np.int32)
        plane = np.zeros(upper.shape[1:], np.uint8)
        cv2.fillConvexPoly(plane, cv2.convexHull(points), 1)
        out[k] = plane.astype(bool)
    return out


def fill_bodies(index: np.ndarray, spacing: Sequence[float], vertebra: int, disc: int, canal: int,
                column: Optional[Column]) -> np.ndarray:
    """Label as vertebra the body between two consecutive discs of the column that the mask left mostly
    unlabelled (a lumbar body taken for sacrum): the discs' convex hull per slice, on background voxels only.

    Consecutive means one motion segment apart (within ``BODY_GAP`` x the median disc spacing); a body is
    filled when less than ``MIN_BODY_COVER`` of that hull (discs and canal left out) is vertebra."""
    if column is None:
        return index
    pieces = _disc_pieces(index == disc, spacing, column)
    if len(pieces) < 3:
        return index
    steps = np.diff([position for _, position in pieces])
    median = float(np.median(steps))
    out = index
    for (upper, _), (lower, _), step in zip(pieces, pieces[1:], steps):
        if step > BODY_GAP * median:
            continue
        body = _hull_between(upper, lower) & ~upper & ~lower & (index != disc) & (index != canal)
        if body.any() and np.count_nonzero(index[body] == vertebra) < MIN_BODY_COVER * np.count_nonzero(body):
            out = out.copy() if out is index else out
            out[body & (index == 0)] = vertebra
    return out

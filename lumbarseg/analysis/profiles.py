"""Line profiles through a 2D sagittal mask, in mm: the one geometric tool every measurement uses.

Points are (row, col) in mm on a canonical sagittal slice (row = inferior, col = posterior). A
mask is sampled along a line by linear interpolation (``scipy.ndimage.map_coordinates``) and a
sample counts as inside at >= 0.5, so a run of n voxels measures n voxels wide: edges are found
to a fraction of a voxel whatever the line's direction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

Point = np.ndarray  # (2,) row, col in mm


@dataclass
class Run:
    """The stretch of a line inside a mask: its two ends (mm) and length (mm)."""

    start: Point
    end: Point

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))


@dataclass
class Frame:
    """A structure's in-plane axes: ``u`` points superior, ``v`` posterior (unit vectors, mm)."""

    centre: Point
    u: Point
    v: Point

    @classmethod
    def from_up(cls, centre: Point, up: Point) -> Frame:
        u = np.asarray(up, float) / np.linalg.norm(up)
        u = u if u[0] <= 0 else -u
        v = np.array([-u[1], u[0]])
        v = v if v[1] >= 0 else -v
        return cls(np.asarray(centre, float), u, v)


def pixel_points(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(N, 2) mm coordinates of a 2D mask's pixels."""
    rows, cols = np.nonzero(mask)
    return np.stack([rows * spacing[0], cols * spacing[1]], axis=1)


def principal_axes(points: np.ndarray) -> Tuple[Point, Point, Point]:
    """Centre, major and minor axis of 2D points (PCA)."""
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((points - centre).T))
    return centre, vectors[:, int(np.argmax(values))], vectors[:, int(np.argmin(values))]


def extent(points: np.ndarray, direction: Point, spacing: Sequence[float]) -> Tuple[float, float]:
    """Min and max of the points' projections on ``direction``, widened by half a pixel to the edges."""
    projection = points @ direction
    half = 0.5 * float(np.abs(direction[0]) * spacing[0] + np.abs(direction[1]) * spacing[1])
    return float(projection.min()) - half, float(projection.max()) + half


def runs_along(mask: np.ndarray, spacing: Sequence[float], point: Point, direction: Point,
               lo: float, hi: float) -> list:
    """Every run of the line ``point + s * direction`` (s in [lo, hi] mm) inside the mask."""
    step = 0.15 * min(spacing)
    s = np.arange(lo, hi + step / 2, step)
    coords = (point[:, None] + direction[:, None] * s[None, :]) / np.asarray(spacing, float)[:, None]
    values = ndimage.map_coordinates(mask.astype(np.float32, copy=False), coords, order=1, mode="constant")
    inside = values >= 0.5
    if not inside.any():
        return []
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    half = step / 2  # each sample stands for a step-long stretch
    return [Run(point + direction * (s[a] - half), point + direction * (s[b] + half)) for a, b in zip(starts, ends)]


def longest_run(mask: np.ndarray, spacing: Sequence[float], point: Point, direction: Point,
                lo: float, hi: float) -> Optional[Run]:
    """The longest run along the line, or None if it misses the mask."""
    runs = runs_along(mask, spacing, point, direction, lo, hi)
    return max(runs, key=lambda r: r.length) if runs else None


def longest_runs(mask: np.ndarray, spacing: Sequence[float], points: np.ndarray, direction: Point,
                 lo: float, hi: float) -> List[Optional[Run]]:
    """``longest_run`` for many parallel lines at once (one interpolation call): one entry per point."""
    step = 0.15 * min(spacing)
    s = np.arange(lo, hi + step / 2, step)
    points = np.asarray(points, float).reshape(-1, 2)
    coords = points.T[:, :, None] + direction[:, None, None] * s[None, None, :]
    coords /= np.asarray(spacing, float)[:, None, None]
    values = ndimage.map_coordinates(mask.astype(np.float32, copy=False), coords.reshape(2, -1), order=1,
                                     mode="constant").reshape(len(points), len(s))
    padded = np.pad((values >= 0.5).astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    out: List[Optional[Run]] = []
    half = step / 2
    for point, row in zip(points, edges):
        starts, ends = np.flatnonzero(row == 1), np.flatnonzero(row == -1) - 1
        if not starts.size:
            out.append(None)
            continue
        best = int(np.argmax(ends - starts))
        out.append(Run(point + direction * (s[starts[best]] - half), point + direction * (s[ends[best]] + half)))
    return out


def fit_line(points: Sequence[Point]) -> Optional[Tuple[Point, Point]]:
    """A point and unit direction (pointing posterior) of the least-squares line through 2D points."""
    pts = np.asarray([p for p in points if p is not None], float)
    if len(pts) < 3:
        return None
    centre, major, _ = principal_axes(pts)
    return centre, (major if major[1] >= 0 else -major)


def angle_deg(a: Point, b: Point) -> float:
    """Unsigned angle between two lines (0-90 degrees)."""
    cos = abs(float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(min(1.0, cos))))

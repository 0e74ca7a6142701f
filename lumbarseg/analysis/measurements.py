"""Clinical measurements on each structure's own mid-sagittal slice, in mm and degrees.

Heights are measured along the structure's superior-inferior axis (a disc's minor principal axis;
for a vertebral body the bisector of its two discs' axes) at 15 %, 50 % and 85 % of its
antero-posterior depth: anterior, middle and posterior height. Endplates are lines fitted to the
ends of eight such height lines. The Genant-style grade is a screening aid computed from heights,
not a diagnosis.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from lumbarseg.analysis.levels import Level
from lumbarseg.analysis.profiles import (
    Frame,
    Point,
    Run,
    angle_deg,
    extent,
    fit_line,
    longest_run,
    longest_runs,
    pixel_points,
    principal_axes,
    runs_along,
)

HEIGHT_FRACTIONS = {"anterior": 0.15, "middle": 0.5, "posterior": 0.85}
ENDPLATE_FRACTIONS = np.linspace(0.15, 0.85, 15)
REACH_MM = 60.0
CANAL_BAND_MM = 5.0
MEYERDING_STEP_PCT = 25.0
GENANT_GRADES = ((0.40, 3), (0.25, 2), (0.20, 1))
SCREENING_NOTE = ("genant_grade is a screening aid computed from mask heights (Genant-style: 1 = 20-25 %, "
                  "2 = 25-40 %, 3 = >= 40 % height loss), not a diagnosis")


@dataclass(frozen=True)
class Thresholds:
    """Flag thresholds: canal stenosis (mm) and listhesis (mm) below which no slip is flagged."""

    canal_relative_mm: float = 12.0
    canal_absolute_mm: float = 10.0
    listhesis_mm: float = 3.0


@dataclass
class Shape2D:
    """A structure on its mid-sagittal slice: mask, frame, AP extent and fitted endplates."""

    mask: np.ndarray
    frame: Frame
    ap: Tuple[float, float]
    reach: float = REACH_MM  # no point of the structure lies farther from the frame's centre (mm)

    superior: Optional[Tuple[Point, Point]] = None  # endplate line (point, direction)
    inferior: Optional[Tuple[Point, Point]] = None

    def run(self, spacing: Sequence[float], point: Point, direction: Point) -> Optional[Run]:
        """The longest run through the structure along a line from a point inside it."""
        return longest_run(self.mask, spacing, point, direction, -2 * self.reach, 2 * self.reach)

    def runs(self, spacing: Sequence[float], points: Sequence[Point], direction: Point) -> List[Optional[Run]]:
        """``run`` for parallel lines through several points."""
        return longest_runs(self.mask, spacing, np.asarray(points), direction, -2 * self.reach, 2 * self.reach)


def _line(run: Run) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    return (tuple(float(x) for x in run.start), tuple(float(x) for x in run.end))  # type: ignore[return-value]


def _point_at(shape: Shape2D, fraction: float) -> Point:
    lo, hi = shape.ap
    target = lo + fraction * (hi - lo)
    return shape.frame.centre + (target - float(shape.frame.centre @ shape.frame.v)) * shape.frame.v


def shape_2d(mask: np.ndarray, spacing: Sequence[float], up: Optional[Point] = None) -> Shape2D:
    """The frame of a 2D structure: ``up`` given (bodies) or its minor principal axis (discs)."""
    points = pixel_points(mask, spacing)
    centre, _, minor = principal_axes(points)
    frame = Frame.from_up(centre, minor if up is None else up)
    reach = float(np.sqrt(((points - centre) ** 2).sum(axis=1).max())) + 2 * max(spacing)
    return Shape2D(mask.astype(np.float32), frame, extent(points, frame.v, spacing), reach)


def body_column(mask: np.ndarray, spacing: Sequence[float], up: Point, discs: Sequence[Shape2D],
                margin_mm: float = 3.0) -> np.ndarray:
    """A vertebral body cut to the antero-posterior span of its discs (+- ``margin_mm``), largest piece kept.

    On a slice off the midline, a pedicle can join the posterior elements to the body; the discs
    say where the body ends.
    """
    if not discs:
        return mask
    frame = Frame.from_up(np.zeros(2), up)
    spans = [pixel_points(d.mask > 0.5, spacing) @ frame.v for d in discs]
    lo = min(float(p.min()) for p in spans) - margin_mm
    hi = max(float(p.max()) for p in spans) + margin_mm
    rows, cols = np.nonzero(mask)
    along = rows * spacing[0] * frame.v[0] + cols * spacing[1] * frame.v[1]
    keep = (along >= lo) & (along <= hi)
    out = np.zeros_like(mask, dtype=bool)
    out[rows[keep], cols[keep]] = True
    labels, count = ndimage.label(out)
    if count > 1:
        out = labels == int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return out if out.any() else mask


def heights(level: Level, shape: Shape2D, spacing: Sequence[float]) -> None:
    """Anterior/middle/posterior heights, AP depth and both endplate lines of a body or disc."""
    runs = endplates(shape, spacing)
    for name, fraction in HEIGHT_FRACTIONS.items():
        run = runs[int(np.argmin(np.abs(ENDPLATE_FRACTIONS - fraction)))]
        level.measurements[f"{name}_height_mm"] = run.length if run else None
        if run:
            level.lines[f"{name}_height"] = _line(run)
    level.measurements["depth_mm"] = shape.ap[1] - shape.ap[0]


def endplates(shape: Shape2D, spacing: Sequence[float]) -> List[Optional[Run]]:
    """Fit the superior and inferior endplate lines from the ends of height lines across the depth
    (``ENDPLATE_FRACTIONS``, which hold the 15/50/85 % height positions); returns those lines."""
    runs = shape.runs(spacing, [_point_at(shape, f) for f in ENDPLATE_FRACTIONS], shape.frame.u)
    shape.superior = fit_line([r.end for r in runs if r])  # u points superior: runs end at the superior endplate
    shape.inferior = fit_line([r.start for r in runs if r])
    return runs


def vertebral_ratios(level: Level) -> None:
    m = level.measurements
    ha, hm, hp = m.get("anterior_height_mm"), m.get("middle_height_mm"), m.get("posterior_height_mm")
    m["wedge_ratio"] = ha / hp if ha and hp else None
    m["biconcave_ratio"] = hm / hp if hm and hp else None


def genant(level: Level, neighbours: Sequence[Level]) -> None:
    """Height loss vs its own posterior height (wedge, biconcave) or the neighbours' (crush); grade 0-3."""
    m = level.measurements
    ha, hm, hp = m.get("anterior_height_mm"), m.get("middle_height_mm"), m.get("posterior_height_mm")
    if not (ha and hm and hp):
        return
    losses = {"wedge": 1 - ha / hp, "biconcave": 1 - hm / hp}
    reference = [n.measurements.get("posterior_height_mm") for n in neighbours]
    reference = [r for r in reference if r]
    if reference:
        losses["crush"] = 1 - hp / float(np.mean(reference))
    kind = max(losses, key=lambda k: losses[k])
    loss = max(0.0, losses[kind])
    grade = next((g for limit, g in GENANT_GRADES if loss >= limit), 0)
    m["height_loss_pct"] = 100.0 * loss
    m["genant_grade"] = float(grade)
    if grade:
        level.flags.append(f"genant_grade_{grade}_{kind} (screening aid)")


def disc_height_index(disc: Level, neighbours: Sequence[Level]) -> None:
    """Disc middle height over the mean middle height of the adjacent complete vertebral bodies."""
    bodies = [n.measurements.get("middle_height_mm") for n in neighbours if not n.partial]
    bodies = [b for b in bodies if b]
    middle = disc.measurements.get("middle_height_mm")
    disc.measurements["disc_height_index"] = middle / float(np.mean(bodies)) if middle and bodies else None


def _canal_run(mask: np.ndarray, sp: Sequence[float], centre: Point, frame: Frame) -> Optional[Run]:
    """On one slice: where the line from the level's centre backwards crosses the canal, the canal's
    width perpendicular to its local axis through the middle of that crossing."""
    crossing = longest_run(mask, sp, centre, frame.v, 0.0, 2 * REACH_MM)
    if crossing is None:
        return None
    middle = (crossing.start + crossing.end) / 2
    r0, c0 = (max(0, int((x - 2 * CANAL_BAND_MM) / d)) for x, d in zip(middle, sp))
    window = mask[r0:r0 + int(4 * CANAL_BAND_MM / sp[0]) + 1, c0:c0 + int(4 * CANAL_BAND_MM / sp[1]) + 1]
    near = pixel_points(window > 0.5, sp) + np.array([r0 * sp[0], c0 * sp[1]])
    near = near[np.linalg.norm(near - middle, axis=1) <= 2 * CANAL_BAND_MM]
    direction = frame.v
    if len(near) >= 10:
        _, axis, _ = principal_axes(near)
        direction = np.array([-axis[1], axis[0]])
        direction = direction if direction @ frame.v >= 0 else -direction
    runs = runs_along(mask, sp, middle, direction, -REACH_MM / 2, REACH_MM / 2)
    return min(runs, key=lambda r: float(np.linalg.norm((r.start + r.end) / 2 - middle))) if runs else crossing


def canal_ap(level: Level, canal: np.ndarray, centre: Point, frame: Frame, spacing_mm: Sequence[float],
             thresholds: Thresholds) -> None:
    """AP diameter of the canal behind a level's centre, perpendicular to the canal's local axis.

    ``canal`` is the 3D canonical canal mask (float32 0/1). The canal's own mid-sagittal plane at this level is its
    left-right centre within +-5 mm of the level's height; the widest of that slice and its two
    neighbours counts (a round canal is widest on its midline, which may fall between slices).
    """
    level.measurements["canal_ap_mm"] = None
    sp = spacing_mm[1:]
    rows = slice(max(0, int((centre[0] - CANAL_BAND_MM) / sp[0])), int((centre[0] + CANAL_BAND_MM) / sp[0]) + 1)
    band = canal[:, rows, :]
    if not band.any():
        return
    weights = band.sum(axis=(1, 2)).astype(float)
    mid = int(round(float(weights @ np.arange(len(weights)) / weights.sum())))
    runs = [_canal_run(canal[k].astype(np.float32, copy=False), sp, centre, frame)
            for k in range(max(0, mid - 1), min(len(weights), mid + 2)) if weights[k] > 0]
    runs = [r for r in runs if r is not None]
    if not runs:
        return
    run = max(runs, key=lambda r: r.length)
    level.measurements["canal_ap_mm"] = run.length
    level.lines["canal_ap"] = _line(run)
    if run.length < thresholds.canal_absolute_mm:
        level.flags.append("canal_absolute_stenosis")
    elif run.length < thresholds.canal_relative_mm:
        level.flags.append("canal_relative_stenosis")


def posterior_wall(shape: Shape2D, spacing: Sequence[float]) -> Optional[Tuple[Point, Point]]:
    """The posterior wall line: posterior ends of AP lines across the central 60 % of the body's height."""
    middle = shape.run(spacing, _point_at(shape, 0.5), shape.frame.u)
    if middle is None:
        return None
    points = [middle.start + f * (middle.end - middle.start) for f in np.linspace(0.2, 0.8, 13)]
    line = fit_line([run.end for run in shape.runs(spacing, points, shape.frame.v) if run is not None])
    if line is None:
        return None
    return line[0], (line[1] if line[1] @ shape.frame.u >= 0 else -line[1])


def intersect(a: Tuple[Point, Point], b: Tuple[Point, Point]) -> Optional[Point]:
    """Where two lines (point, direction) cross; None when they are parallel."""
    matrix = np.array([a[1], -b[1]]).T
    if abs(np.linalg.det(matrix)) < 1e-9:
        return None
    t = np.linalg.solve(matrix, b[0] - a[0])
    return a[0] + t[0] * a[1]


def listhesis(upper: Level, upper_shape: Shape2D, lower: Level, lower_shape: Shape2D,
              spacing: Sequence[float], thresholds: Thresholds) -> None:
    """Translation of a vertebra over the one below (Meyerding): its posterior-inferior corner against the
    lower's posterior-superior corner (posterior wall lines meeting the endplate lines), along the lower
    endplate, in mm and in % of the lower body's depth. Positive: anterolisthesis."""
    upper_wall, lower_wall = posterior_wall(upper_shape, spacing), posterior_wall(lower_shape, spacing)
    if not (upper_wall and lower_wall and upper_shape.inferior and lower_shape.superior):
        return
    upper_corner = intersect(upper_wall, upper_shape.inferior)
    lower_corner = intersect(lower_wall, lower_shape.superior)
    depth = lower.measurements.get("depth_mm") or (lower_shape.ap[1] - lower_shape.ap[0])
    if upper_corner is None or lower_corner is None:
        return
    along = lower_shape.superior[1]  # the lower's superior endplate, pointing posterior
    slip = float((lower_corner - upper_corner) @ along)  # > 0: the upper corner lies anterior
    percent = 100.0 * slip / depth
    m = upper.measurements
    m["listhesis_mm"], m["listhesis_pct"] = slip, percent
    m["meyerding_grade"] = 0.0
    if abs(slip) >= thresholds.listhesis_mm:
        if slip > 0:
            m["meyerding_grade"] = float(min(5, int(percent // MEYERDING_STEP_PCT) + 1))
            upper.flags.append(f"anterolisthesis_grade_{int(m['meyerding_grade'])}")
        else:
            upper.flags.append("retrolisthesis")
    upper.lines["listhesis"] = (tuple(float(x) for x in upper_corner), tuple(float(x) for x in lower_corner))


def lordosis(upper: Optional[Tuple[Point, Point]], lower: Optional[Tuple[Point, Point]]) -> Optional[float]:
    """Angle between two endplate lines, positive when they open anteriorly (lordosis), else negative."""
    if upper is None or lower is None:
        return None
    angle = angle_deg(upper[1], lower[1])

    def row_at(line: Tuple[Point, Point], col: float) -> float:
        point, direction = line
        return float(point[0] + (col - point[1]) * direction[0] / direction[1]) if abs(direction[1]) > 1e-9 \
            else float(point[0])

    anterior = min(upper[0][1], lower[0][1]) - 20.0
    posterior = max(upper[0][1], lower[0][1]) + 20.0
    gap_anterior = row_at(lower, anterior) - row_at(upper, anterior)
    gap_posterior = row_at(lower, posterior) - row_at(upper, posterior)
    return angle if gap_anterior >= gap_posterior else -angle


def endplate_segment(line: Tuple[Point, Point], shape: Shape2D) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """The endplate line drawn across the structure's depth (for the figure)."""
    point, direction = line
    lo, hi = shape.ap
    span = (hi - lo) / 2 + 8.0
    return (tuple(float(x) for x in point - span * direction), tuple(float(x) for x in point + span * direction))  # type: ignore[return-value]


Measures = Dict[str, Optional[float]]

"""How the discs are counted: their order along the column, missed and split discs, the lumbosacral junction.

Levels are named by counting up from L5-S1, so the count must follow the anatomy, not the list of disc
components a mask happens to hold. :func:`count_levels` gives every disc a position (1 = L5-S1) by these
rules, each measured on the routine scans of the development set and the SPIDER validation patients:

1. **Order** along the column (:class:`~lumbarseg.analysis.column.Column`, the canal's axis) from the bottom;
   without a canal, by height.
2. **Spacing.** Consecutive disc centres lie one motion segment apart. Two discs closer than ``MERGE`` x
   the median spacing are one disc space (a disc cut in two): they share a position. A gap wider than
   ``GAP`` x the median holds discs the mask missed: ``round(gap / median) - 1`` virtual discs are counted in
   it, and every name above it is uncertain (a missed disc, or a block vertebra).
3. **The junction.** The lowest disc is L5-S1 unless a whole vertebral body lies under it: bone running
   down from it, along its axis, for ``BODY_MIN``-``BODY_MAX`` times the height of the body above it and
   then stopping, not cut by the field of view. lumbarseg's masks never label the sacrum (neither do
   SPIDER's), so that body is L5 and the L5-S1 disc was missed: a virtual L5-S1 is counted under it
   (uncertain). Bone that runs on (a labelled sacrum) or is cut by the field of view leaves the lowest disc
   as L5-S1.
4. **Checks.** L5-S1 is the most inclined disc (the sacral slope): a disc above the lowest one tilted more
   than ``TILT_TOLERANCE_DEG`` further forward makes the count uncertain, as do fewer than ``MIN_DISCS`` discs.

What rules 2-4 find is said in the report: ``levels_confidence`` is "high" or "uncertain", with the
reasons, and the levels whose names depend on an uncertain step carry ``uncertain``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lumbarseg.analysis.column import MIDLINE_MM, Column
from lumbarseg.analysis.discs import DiscFrame

MERGE = 0.5
GAP = 1.6
BODY_MIN, BODY_MAX = 0.6, 1.45
TILT_TOLERANCE_DEG = 5.0
MIN_DISCS = 3
_BIN_MM = 1.0
_BONE_FRACTION = 0.25  # a profile bin is bone when it holds this fraction of the body's cross-section
_STOP_MM = 3.0  # a run of bone ends at a gap this long


@dataclass
class Count:
    """Disc positions (1 = L5-S1), their frames by position (virtual ones included) and the confidence."""

    positions: Dict[int, int]  # disc component id -> position
    frames: Dict[int, DiscFrame]  # position -> frame
    virtual: List[int] = field(default_factory=list)  # positions of discs the mask lacks
    reasons: List[str] = field(default_factory=list)  # why the count is uncertain
    notes: List[str] = field(default_factory=list)  # what was done that leaves the names as sure as before
    uncertain_from: Optional[int] = None  # levels at this position and above have uncertain names

    @property
    def confidence(self) -> str:
        return "uncertain" if self.reasons else "high"

    def uncertain(self, position: int) -> bool:
        return self.uncertain_from is not None and position >= self.uncertain_from

    def _doubt(self, position: int, reason: str) -> None:
        self.reasons.append(reason)
        self.uncertain_from = position if self.uncertain_from is None else min(self.uncertain_from, position)


def tilt_deg(frame: DiscFrame) -> float:
    """A disc's inclination in the sagittal plane (degrees; negative: its front lower than its back)."""
    return float(np.degrees(np.arctan2(frame.normal[1], -frame.normal[0])))


def _order(frames: Dict[int, DiscFrame], column: Optional[Column], spacing: Sequence[float]) -> List[int]:
    """Disc ids from the bottom, along the column's axis (by height without one)."""
    if column is None:
        return sorted(frames, key=lambda k: -frames[k].centre[1])
    return sorted(frames, key=lambda k: -column.position_mm(frames[k].centre[1] / spacing[1]))


def _distance(a: DiscFrame, b: DiscFrame) -> float:
    """Centre to centre (mm), left-right included: two pieces side by side at one height are not one disc."""
    return float(np.linalg.norm(a.centre - b.centre))


def _between(a: DiscFrame, b: DiscFrame, fraction: float) -> DiscFrame:
    """A virtual disc a ``fraction`` of the way from ``a`` to ``b``."""
    normal = (1 - fraction) * a.normal + fraction * b.normal
    return DiscFrame((1 - fraction) * a.centre + fraction * b.centre, normal / np.linalg.norm(normal),
                     (1 - fraction) * a.depth_mm + fraction * b.depth_mm,
                     (1 - fraction) * a.thickness_mm + fraction * b.thickness_mm)


def _profile(vertebra: np.ndarray, spacing: Sequence[float], frame: DiscFrame,
             reach_mm: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bone voxels per ``_BIN_MM`` along a disc's axis, near the midline and within the disc's depth: counts
    below the disc, counts above it (bin 0 at the disc's centre), and per bin below whether that bone touches
    the grid's edge (the field of view cut it)."""
    s, r, c = (np.arange(n) * d for n, d in zip(vertebra.shape, spacing))
    bone = vertebra[np.abs(s - frame.centre[0]) <= MIDLINE_MM].sum(axis=0)  # (rows, cols) across the midline
    rows, cols = r[:, None] - frame.centre[1], c[None, :] - frame.centre[2]
    down = -(rows * frame.normal[0] + cols * frame.normal[1])  # > 0 below the disc (its normal points up)
    across = np.abs(rows * frame.normal[1] - cols * frame.normal[0])
    inside = (across <= 0.4 * frame.depth_mm) & (np.abs(down) < reach_mm)
    bins = int(np.ceil(reach_mm / _BIN_MM))
    index = np.minimum(np.floor(np.abs(down) / _BIN_MM).astype(int), bins - 1)
    edge = np.zeros(bone.shape, bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    below, above = inside & (down > 0), inside & (down <= 0)
    cut = np.bincount(index[below & edge & (bone > 0)], minlength=bins) > 0
    return (np.bincount(index[below], weights=bone[below], minlength=bins),
            np.bincount(index[above], weights=bone[above], minlength=bins), cut)


def _run(counts: np.ndarray, threshold: float, start_mm: float) -> Tuple[int, int]:
    """Bins (first, stop) of the first run of bone from ``start_mm`` on: it starts within 10 mm of ``start_mm``
    and ends at ``_STOP_MM`` without bone; (0, 0) when there is none."""
    gap = int(round(_STOP_MM / _BIN_MM))
    start = int(start_mm / _BIN_MM)
    bone = np.flatnonzero(counts[start:] >= threshold) + start
    if bone.size == 0 or (bone[0] - start) * _BIN_MM > 10.0:
        return 0, 0
    breaks = np.flatnonzero(np.diff(bone) > gap)
    return int(bone[0]), int(bone[breaks[0]] if breaks.size else bone[-1]) + 1


def _junction(count: Count, vertebra: np.ndarray, spacing: Sequence[float], gap: float) -> None:
    """Rule 3: a whole body under the lowest disc makes it L4-L5, with a virtual L5-S1 under that body."""
    lowest = count.frames[1]
    below, above, cut = _profile(vertebra, spacing, lowest, 3.0 * gap)
    half = lowest.thickness_mm / 2
    near = above[int(half / _BIN_MM):int((half + gap) / _BIN_MM)]
    if not (near > 0).any():
        return
    section = float(np.median(near[near > 0]))  # the body above: bone voxels per bin across it
    first, stop = _run(above, _BONE_FRACTION * section, half)
    body = (stop - first) * _BIN_MM
    first, stop = _run(below, _BONE_FRACTION * section, half)
    under = (stop - first) * _BIN_MM
    if cut[first:stop + int(round(_STOP_MM / _BIN_MM))].any() or not BODY_MIN * body <= under <= BODY_MAX * body:
        return
    offset = stop * _BIN_MM + max(lowest.thickness_mm, 4.0) / 2  # under the run of bone
    virtual = DiscFrame(lowest.centre - np.concatenate([[0.0], offset * lowest.normal]), lowest.normal.copy(),
                        lowest.depth_mm, lowest.thickness_mm)
    count.frames = {1: virtual, **{p + 1: f for p, f in count.frames.items()}}
    count.positions = {k: p + 1 for k, p in count.positions.items()}
    count.virtual = [1] + [p + 1 for p in count.virtual]
    if count.uncertain_from is not None:
        count.uncertain_from += 1
    count._doubt(0, f"no disc under the lowest body ({under:.0f} mm of bone under the lowest disc, as tall as the "
                    f"body above it, {body:.0f} mm): the lowest body is taken as L5 and its disc as missed")


def count_levels(frames: Dict[int, DiscFrame], vertebra: np.ndarray, spacing: Sequence[float],
                 column: Optional[Column] = None) -> Count:
    """Positions for the disc components ``frames`` (id -> frame) of a canonical mask (rules in the module doc)."""
    order = _order(frames, column, spacing)
    count = Count({}, {})
    if not order:
        return count
    gaps = [_distance(frames[a], frames[b]) for a, b in zip(order, order[1:])]
    median = float(np.median(gaps)) if gaps else 0.0
    position = 1
    count.positions[order[0]] = 1
    count.frames[1] = frames[order[0]]
    for (a, b), gap in zip(zip(order, order[1:]), gaps):
        if gap < MERGE * median:
            count.positions[b] = position
            count.notes.append(f"two disc pieces {gap:.0f} mm apart taken as one disc")
            continue
        missing = int(round(gap / median)) - 1 if gap > GAP * median else 0
        for i in range(1, missing + 1):
            count.frames[position + i] = _between(frames[a], frames[b], i / (missing + 1))
            count.virtual.append(position + i)
        if missing:
            count._doubt(position + 1, f"a gap of {gap:.0f} mm between two discs (median {median:.0f} mm): "
                                       f"{missing} disc(s) counted as missed there")
        position += missing + 1
        count.positions[b] = position
        count.frames[position] = frames[b]
    if len(order) < MIN_DISCS:
        count._doubt(0, f"{len(order)} disc(s) found: too few to check the count")
    else:
        _junction(count, vertebra, spacing, median)
    real = [p for p in count.frames if p not in count.virtual]
    if real and 1 not in count.virtual:
        steepest = min(real, key=lambda p: tilt_deg(count.frames[p]))
        if tilt_deg(count.frames[steepest]) < tilt_deg(count.frames[1]) - TILT_TOLERANCE_DEG:
            count._doubt(0, f"the lowest disc is not the most inclined (a disc {steepest - 1} level(s) higher "
                            f"tilts {tilt_deg(count.frames[steepest]):.0f} against {tilt_deg(count.frames[1]):.0f} "
                            "degrees): the lumbosacral junction may lie elsewhere")
    return count

"""Level names and label values: counted from the bottom, the lowest disc being L5-S1.

The sacrum is not segmented by lumbarseg's classes (nor in SPIDER), so the lowest disc found is
taken as L5-S1 and names count upwards: L5, L4-L5, L4, ..., L1, T12-L1, T12, T11-T12, ... A
transitional anatomy (lumbarisation of S1, sacralisation of L5, 4 or 6 lumbar vertebrae) cannot be
told from a lumbar field of view: names are then shifted by one, as a reader counting from the
sacrum would shift them. Vertebra voxels below the lowest disc are the sacrum (S1).

Label values of ``<case>_levels.nii.gz`` follow SPIDER's instance numbering, so a levels mask
reads with the built-in ``spider`` label map: vertebra k-th from the bottom = k (L5 = 1, L4 = 2,
...), 100 + k when partially in view; disc below vertebra k = 200 + k (L5-S1 = 201); spinal canal
= 100; the sacrum (S1), which SPIDER does not number, = 26 (126 when partial).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

# Bottom-up order of the mobile vertebrae above the sacrum.
VERTEBRAE_UP = ([f"L{i}" for i in range(5, 0, -1)] + [f"T{i}" for i in range(12, 0, -1)]
                + [f"C{i}" for i in range(7, 0, -1)])
SACRUM = "S1"
CANAL_VALUE = 100
SACRUM_VALUE = 26
PARTIAL_OFFSET = 100
DISC_OFFSET = 200

KINDS = ("vertebra", "disc", "sacrum")


def vertebra_name(position: int) -> str:
    """Vertebra ``position`` from the bottom: 0 = S1 (below the lowest disc), 1 = L5, 2 = L4, ..."""
    if position == 0:
        return SACRUM
    return VERTEBRAE_UP[position - 1] if position <= len(VERTEBRAE_UP) else f"V{position}"


def disc_name(position: int) -> str:
    """Disc ``position`` from the bottom (1 = lowest): named after the vertebrae above and below."""
    return f"{vertebra_name(position)}-{vertebra_name(position - 1)}"


def level_value(kind: str, position: int, partial: bool) -> int:
    """The value a level takes in the levels mask (SPIDER's numbering, see the module docstring)."""
    if kind == "disc":
        return DISC_OFFSET + position
    base = SACRUM_VALUE if kind == "sacrum" else position
    return base + (PARTIAL_OFFSET if partial else 0)


def name_from_spider_value(value: int) -> Optional[Tuple[str, str]]:
    """(name, kind) of a SPIDER original label value; None for background/canal/unknown."""
    if 1 <= value <= 25 or 101 <= value <= 125:
        return vertebra_name(value % 100), "vertebra"
    if 201 <= value <= 225:
        return disc_name(value - DISC_OFFSET), "disc"
    return None


@dataclass
class Level:
    """One vertebra, sacrum or disc: its name, where it is, and what was measured on it."""

    name: str
    kind: str
    position: int  # from the bottom (vertebra: 0 = sacrum; disc: 1 = lowest)
    partial: bool
    slice: int  # its own mid-sagittal slice (canonical axis-0 index)
    centre_mm: Tuple[float, float, float]  # canonical voxel space x spacing (slice, row, col) mm
    value: int = 0
    measurements: Dict[str, Optional[float]] = field(default_factory=dict)
    flags: List[str] = field(default_factory=list)
    lines: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = field(default_factory=dict)
    uncertain: bool = False  # its name rests on an uncertain count (:mod:`.sequence`)

    def __post_init__(self) -> None:
        self.value = level_value(self.kind, self.position, self.partial)

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "kind": self.kind, "partial": self.partial, "uncertain": self.uncertain,
                "label_value": self.value,
                "mid_sagittal_slice": self.slice, "flags": list(self.flags),
                "measurements": {k: (None if v is None else round(float(v), 3)) for k, v in self.measurements.items()}}


def order_key(level: Level) -> Tuple[int, int]:
    """Top to bottom reading order: vertebra k, then the disc below it (k), then vertebra k - 1, ..."""
    return (-level.position, 0 if level.kind != "disc" else 1)


def label_table(levels: List[Level]) -> List[Tuple[int, str, Tuple[int, int, int]]]:
    """(value, name, RGB) for every level and the canal: what ITK-SNAP and 3D Slicer tables list."""
    rows = [(CANAL_VALUE, "spinal canal", (230, 40, 60))]
    for level in levels:
        rows.append((level.value, level.name + (" (partial)" if level.partial else ""), level_colour(level)))
    return sorted(rows)


def level_colour(level: Level) -> Tuple[int, int, int]:
    """Alternating warm colours for bones, cool ones for discs, so that neighbours stand apart."""
    if level.kind == "disc":
        palette = [(0, 160, 255), (0, 210, 190), (90, 120, 255)]
    else:
        palette = [(255, 196, 0), (255, 128, 40), (200, 230, 60)]
    return palette[level.position % len(palette)]


def colour_array(levels: List[Level]) -> np.ndarray:
    """A 256-entry... lookup of level value -> RGB (uint8), values up to 255."""
    lut = np.zeros((256, 3), np.uint8)
    lut[CANAL_VALUE] = (230, 40, 60)
    for level in levels:
        lut[level.value] = level_colour(level)
    return lut

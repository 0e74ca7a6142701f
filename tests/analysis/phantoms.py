"""Synthetic spines of known geometry: vertebral bodies (boxes, wedges), discs (boxes, wedges), a canal
tube of known diameter, posterior elements that touch their neighbours, a known slip and lordosis.

A spine is built as a chain from the bottom in the sagittal plane (mm; r = inferior, c = posterior):
each element (disc or body) is a quadrilateral standing on the top edge of the one below, so wedge
discs bend the chain by a known angle. It is rasterised in lumbarseg's canonical RIP grid at any
spacing (voxel centres at index x spacing) and can then be put in any orientation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from lumbarseg.io.volume import Volume, affine_from_spacing, reorient

VERTEBRA, DISC, CANAL = 1, 2, 3  # the `lumbarseg` label map's values
DEPTH = 30.0  # body and disc depth (mm)
HALF_WIDTH = 12.0  # body and disc half-width (left-right, mm)


@dataclass
class Element:
    kind: str  # "disc", "body" or "sacrum"
    name: str
    anterior: float  # heights (mm) at the anterior and posterior edges
    posterior: float
    slip: float = 0.0  # anterior shift of this element (and all above) before it is placed (mm)
    corners: Optional[np.ndarray] = None  # (4, 2): A0, B0, B1, A1 (r, c) mm

    def height_at(self, fraction: float) -> float:
        """Height at a fraction of the depth from the anterior edge (linear for a wedge)."""
        return self.anterior + fraction * (self.posterior - self.anterior)


@dataclass
class Phantom:
    elements: List[Element]
    spacing: Tuple[float, float, float]
    shape: Tuple[int, int, int]
    x_centre: float
    canal_diameter: Optional[float] = None
    start: Tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0  # radians of the first endplate (0 = horizontal)
    extra: Dict[str, float] = field(default_factory=dict)

    def place(self) -> Dict[str, Element]:
        """Stack the elements from the bottom; returns them by name with their corners set."""
        point = np.array(self.start, float)
        phi = self.angle
        placed = {}
        for element in self.elements:
            post = np.array([np.sin(phi), np.cos(phi)])
            up = np.array([-np.cos(phi), np.sin(phi)])
            point = point - element.slip * post
            a0, b0 = point, point + DEPTH * post
            a1, b1 = a0 + element.anterior * up, b0 + element.posterior * up
            element.corners = np.array([a0, b0, b1, a1])
            placed[element.name] = element
            point = a1
            phi = float(np.arctan2(b1[0] - a1[0], b1[1] - a1[1]))
        return placed

    @property
    def canal_centre(self) -> float:
        """Column (mm) of the canal tube's axis: 1 mm + radius behind the most posterior body wall."""
        wall = max(float(e.corners[:, 1].max()) for e in self.elements)
        return wall + 1.0 + (self.canal_diameter or 12.0) / 2

    def build(self, values: Optional[Dict[str, int]] = None) -> Tuple[np.ndarray, Dict[str, Element]]:
        """The canonical class-index array (or, with ``values``, each element's own value: an instance
        mask; "canal" names the canal's value) and the placed elements by name."""
        placed = self.place()
        grid_r = (np.arange(self.shape[1]) * self.spacing[1])[:, None]
        grid_c = (np.arange(self.shape[2]) * self.spacing[2])[None, :]
        x = np.arange(self.shape[0]) * self.spacing[0] - self.x_centre
        out = np.zeros(self.shape, np.uint8)
        width = np.abs(x) <= HALF_WIDTH
        for element in self.elements:
            inside = _convex(element.corners, grid_r, grid_c)
            value = values[element.name] if values else (DISC if element.kind == "disc" else VERTEBRA)
            out[width] = np.where(inside[None], value, out[width])
        if self.canal_diameter:
            radius = self.canal_diameter / 2
            tube = x[:, None] ** 2 + (grid_c - self.canal_centre) ** 2 <= radius ** 2  # (X, C)
            out[np.broadcast_to(tube[:, None, :], out.shape) & (out == 0)] = values["canal"] if values else CANAL
        for element in self.elements:
            if element.kind == "body":
                self._posterior(out, element, grid_r, grid_c, x, values[element.name] if values else VERTEBRA)
        return out, placed

    def _posterior(self, out, element, grid_r, grid_c, x, value) -> None:
        """Pedicles (para-median, beside the canal) and an arch with its spinous process (median) that
        reaches the arch of the vertebra above: neighbours touch, as facet joints do."""
        a0, b0, b1, a1 = element.corners
        post = (b0 - a0) / np.linalg.norm(b0 - a0)
        up = (a1 - a0) / np.linalg.norm(a1 - a0)
        h = min(element.anterior, element.posterior)
        gap = self.canal_centre + (self.canal_diameter or 12.0) / 2 + 1.0 - float(b0[1])
        base = b0 + 0.3 * h * up
        pedicle = np.array([base, base + gap * post, base + gap * post + 0.4 * h * up, base + 0.4 * h * up])
        arch_base = b0 + gap * post + 0.1 * h * up
        reach = h + 12.0
        arch = np.array([arch_base, arch_base + 18 * post, arch_base + 18 * post + reach * up, arch_base + reach * up])
        for polygon, selector in ((pedicle, (np.abs(x) >= HALF_WIDTH - 4) & (np.abs(x) <= HALF_WIDTH)),
                                  (arch, np.abs(x) <= HALF_WIDTH)):
            inside = _convex(polygon, grid_r, grid_c)
            out[selector] = np.where(inside[None] & (out[selector] == 0), value, out[selector])


def _convex(corners: np.ndarray, grid_r: np.ndarray, grid_c: np.ndarray) -> np.ndarray:
    """Grid points inside a convex polygon (either winding)."""
    signs = []
    for (r0, c0), (r1, c1) in zip(corners, np.roll(corners, -1, axis=0)):
        signs.append((r1 - r0) * (grid_c - c0) - (c1 - c0) * (grid_r - r0))
    signs = np.stack(signs)
    return (signs >= 0).all(axis=0) | (signs <= 0).all(axis=0)


def orient(array: np.ndarray, spacing: Tuple[float, float, float], orientation: str,
           origin: Tuple[float, float, float] = (12.0, -40.0, 7.5)) -> Volume:
    """The canonical array stored in another orientation, with the affine that says so."""
    affine = affine_from_spacing(spacing, "RIP")
    affine[:3, 3] = origin
    return reorient(Volume(array, affine), orientation)[0]

"""Clean a predicted class-index volume: drop stray components, fill holes, per class.

The anatomy decides the rule. The spinal canal is one tube, so only its largest 3D component is
kept. Vertebrae and discs are several separate objects of similar size, so every component at
least ``min_fraction`` of the class's largest one is kept (a partly visible vertebra at the edge
of the field of view survives, a speck of false positives does not). Holes are filled slice by
slice (a sagittal hole may be open across slices), and only with background voxels: another
class is never overwritten. Removed voxels become background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ComponentRule:
    """Which connected components of one class to keep, and whether to fill its holes."""

    max_components: Optional[int] = None  # keep at most the N largest (None: no limit)
    min_fraction: float = 0.0  # drop components smaller than this fraction of the largest
    fill_holes: bool = True


DEFAULT_RULES: Dict[str, ComponentRule] = {
    "canal": ComponentRule(max_components=1),
    "vertebra": ComponentRule(min_fraction=0.05),
    "disc": ComponentRule(min_fraction=0.05),
}
FALLBACK_RULE = ComponentRule(min_fraction=0.05)


def rules_for(classes: Sequence[str],
              overrides: Optional[Mapping[str, ComponentRule]] = None) -> Dict[str, ComponentRule]:
    """The rule for each foreground class: overrides, then the defaults by name, then the fallback."""
    overrides = dict(overrides or {})
    return {name: overrides.get(name, DEFAULT_RULES.get(name, FALLBACK_RULE)) for name in classes[1:]}


def keep_components(binary: np.ndarray, rule: ComponentRule) -> np.ndarray:
    """The components of ``binary`` (3D, face connectivity) that ``rule`` keeps."""
    labels, count = ndimage.label(binary)
    if count <= 1:
        return binary.astype(bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(sizes)[::-1]
    keep = sizes[order] >= rule.min_fraction * sizes[order[0]]
    if rule.max_components is not None:
        keep[rule.max_components:] = False
    lut = np.zeros(count + 1, dtype=bool)
    lut[order[keep] + 1] = True
    return lut[labels]


def fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """Fill holes in each 2D slice along axis 0 (sagittal slices in the canonical orientation).

    A hole is a background region of a slice that does not touch the slice's border: all slices
    are labelled in one call with a structure that does not connect across axis 0.
    """
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    background, count = ndimage.label(~binary, structure=in_plane)
    if count == 0:
        return binary.copy()
    border = np.zeros(count + 1, dtype=bool)
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        border[np.unique(edge)] = True
    hole = ~border
    hole[0] = False
    return binary | hole[background]


def postprocess(mask: np.ndarray, classes: Sequence[str],
                rules: Optional[Mapping[str, ComponentRule]] = None) -> np.ndarray:
    """Apply each foreground class's rule to a class-index volume (axis 0 = slices); returns a new mask."""
    per_class = rules_for(classes, rules)
    out = np.zeros_like(mask)
    for index, name in enumerate(classes):
        if index == 0:
            continue
        binary = mask == index
        if binary.any():
            out[keep_components(binary, per_class[name])] = index
    for index, name in enumerate(classes):
        if index and per_class[name].fill_holes:
            filled = fill_holes_per_slice(out == index)
            out[filled & (out == 0)] = index
    return out

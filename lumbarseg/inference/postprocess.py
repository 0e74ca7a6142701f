"""Clean a predicted class-index volume: drop stray components, fill holes, per class.

The anatomy decides the rule. The spinal canal is one tube, so only its largest 3D component is
kept. Vertebrae and discs are several separate objects of similar size, so every component at
least ``min_fraction`` of the class's largest one is kept (a partly visible vertebra at the edge
of the field of view survives, a speck of false positives does not). Holes are filled slice by
slice (a sagittal hole may be open across slices), and only with background voxels: another
class is never overwritten. Removed voxels become background. With the grid's spacing, vertebra and
disc components off the spinal column (traced along the canal: :mod:`lumbarseg.analysis.column`) are
removed too: patches in far-lateral slices or in the pelvis that belong to no spine.

Components are labelled by ``cc3d`` (connected-components-3d: imports in milliseconds, where
``scipy.ndimage`` takes most of a second), on the class's bounding box only; the labels, and so
the result, are those of ``scipy.ndimage.label`` (tests/inference/test_postprocess.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import cc3d
import numpy as np

from lumbarseg.analysis.column import keep_column, trace
from lumbarseg.io.volume import bounding_box


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
    """The components of ``binary`` (3D, face connectivity) that ``rule`` keeps.

    Ties in size are ranked by label (scan order), the later label first, as a stable sort gives.
    """
    out = np.zeros(binary.shape, dtype=bool)
    if not binary.any():
        return out
    box = bounding_box(binary)
    labels, count = cc3d.connected_components(np.ascontiguousarray(binary[box], dtype=np.uint8), connectivity=6,
                                              return_N=True)
    if count <= 1:
        out[box] = labels > 0
        return out
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(sizes, kind="stable")[::-1]
    keep = sizes[order] >= rule.min_fraction * sizes[order[0]]
    if rule.max_components is not None:
        keep[rule.max_components:] = False
    lut = np.zeros(count + 1, dtype=bool)
    lut[order[keep] + 1] = True
    out[box] = lut[labels]
    return out


def fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """Fill holes in each 2D slice along axis 0 (sagittal slices in the canonical orientation).

    A hole is a background region of a slice that does not touch the slice's border (4-connected
    in the slice). Only the class's bounding box is labelled: background on the box's edge touches
    the background outside it, which reaches the slice's border, so it is never a hole either way.
    """
    out = binary.copy()
    if not binary.any():
        return out
    box = bounding_box(binary)
    for k in range(box[0].start, box[0].stop):
        plane = binary[(k,) + box[1:]]
        background, count = cc3d.connected_components(np.ascontiguousarray(~plane, dtype=np.uint8), connectivity=4,
                                                      return_N=True)
        if count == 0:
            continue
        border = np.zeros(count + 1, dtype=bool)
        for edge in (background[0, :], background[-1, :], background[:, 0], background[:, -1]):
            border[edge] = True
        hole = ~border
        hole[0] = False
        out[(k,) + box[1:]] |= hole[background]
    return out


def postprocess(mask: np.ndarray, classes: Sequence[str], rules: Optional[Mapping[str, ComponentRule]] = None,
                spacing: Optional[Sequence[float]] = None) -> np.ndarray:
    """Apply each foreground class's rule to a canonical class-index volume (axis 0 = slices), then, given the
    voxel ``spacing`` (mm) and classes named vertebra, disc and canal, keep only the spinal column; returns a
    new mask."""
    per_class = rules_for(classes, rules)
    out = np.zeros_like(mask)
    for index, name in enumerate(classes):
        if index == 0:
            continue
        out[keep_components(mask == index, per_class[name])] = index  # an absent class keeps nothing
    if spacing is not None and {"vertebra", "disc", "canal"} <= set(classes):
        vertebra, disc, canal = (list(classes).index(name) for name in ("vertebra", "disc", "canal"))
        out = keep_column(out, spacing, vertebra, disc, trace(out == canal, spacing))
    for index, name in enumerate(classes):
        if index and per_class[name].fill_holes:
            filled = fill_holes_per_slice(out == index)
            out[filled & (out == 0)] = index
    return out

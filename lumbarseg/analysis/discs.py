"""Intervertebral discs in a mask: their components, and each one's frame (centre, axes, depth, thickness).

A disc's frame is what the level count (:mod:`.sequence`) and the body seeds (:mod:`.instances`) work
from: its centre, the normal of its mid-plane in the sagittal plane (pointing superior), its front-back
depth and its head-foot thickness. Fragments smaller than ``_MIN_DISC_FRACTION`` of the median disc (a
sliver at the edge of the view) or ``_MIN_MM3`` are no disc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

Spacing = Tuple[float, float, float]
_MIN_DISC_FRACTION = 0.2  # of the median disc volume
_MIN_MM3 = 50.0


@dataclass
class DiscFrame:
    """A disc's centre and its in-plane axes (mm, canonical (row, col) = (inferior, posterior))."""

    centre: np.ndarray  # (3,) mm in canonical voxel space scaled by spacing
    normal: np.ndarray  # (2,) unit vector in the sagittal plane, pointing superior (negative row)
    depth_mm: float  # antero-posterior extent
    thickness_mm: float = 0.0  # head-foot extent along the normal (5th to 95th percentile)


def _sagittal_pca(coords_mm: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and (major, minor) unit axes of points in the sagittal (row, col) plane."""
    centre = coords_mm.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((coords_mm - centre).T))
    return centre, vectors[:, int(np.argmax(values))], vectors[:, int(np.argmin(values))]


def disc_frame(coords_mm: np.ndarray) -> DiscFrame:
    """A disc's frame from its voxel coordinates (N, 3) in mm."""
    _, major, minor = _sagittal_pca(coords_mm[:, 1:])
    normal = minor if minor[0] < 0 else -minor
    extent = coords_mm[:, 1:] @ major
    low, high = np.percentile(coords_mm[:, 1:] @ normal, [5, 95])
    return DiscFrame(coords_mm.mean(axis=0), normal, float(extent.max() - extent.min()), float(high - low))


def label_components(mask: np.ndarray) -> Tuple[np.ndarray, int, np.ndarray]:
    """3D components of ``mask``: labels, their number, and each label's voxel count (index 0: background)."""
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    return labels, count, sizes


def split_discs(disc: np.ndarray, spacing: Spacing) -> Tuple[np.ndarray, Dict[int, DiscFrame]]:
    """Disc components (labels 1..n in scan order) and their frames, small fragments dropped (labelled 0)."""
    labels, count, sizes = label_components(disc)
    voxel_mm3 = float(np.prod(spacing))
    if count == 0:
        return np.zeros(disc.shape, np.int32), {}
    median = float(np.median(sizes[1:]))
    keep = [k for k in range(1, count + 1)
            if sizes[k] >= _MIN_DISC_FRACTION * median and sizes[k] * voxel_mm3 >= _MIN_MM3]
    frames = []
    for k, box in zip(range(1, count + 1), ndimage.find_objects(labels)):
        if k not in keep:
            continue
        local = np.nonzero(labels[box] == k)
        coords = np.stack([(idx + sl.start) * s for idx, sl, s in zip(local, box, spacing)], axis=1)
        frames.append((k, disc_frame(coords)))
    lut = np.zeros(count + 1, np.int32)
    lut[keep] = keep
    return lut[labels], dict(frames)

"""Post-processing labels with cc3d on bounding boxes: the same masks as scipy.ndimage on the whole volume."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lumbarseg.inference.postprocess import (
    ComponentRule,
    fill_holes_per_slice,
    keep_components,
    postprocess,
    rules_for,
)

CLASSES = ["background", "vertebra", "disc", "canal"]


def scipy_keep(binary: np.ndarray, rule: ComponentRule) -> np.ndarray:
    """The former implementation: scipy.ndimage.label over the whole volume."""
    labels, count = ndimage.label(binary)
    if count <= 1:
        return binary.astype(bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(sizes, kind="stable")[::-1]
    keep = sizes[order] >= rule.min_fraction * sizes[order[0]]
    if rule.max_components is not None:
        keep[rule.max_components:] = False
    lut = np.zeros(count + 1, dtype=bool)
    lut[order[keep] + 1] = True
    return lut[labels]


def scipy_fill(binary: np.ndarray) -> np.ndarray:
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


def scipy_postprocess(mask: np.ndarray) -> np.ndarray:
    per_class = rules_for(CLASSES)
    out = np.zeros_like(mask)
    for index, name in enumerate(CLASSES[1:], 1):
        out[scipy_keep(mask == index, per_class[name])] = index
    for index in range(1, len(CLASSES)):
        filled = scipy_fill(out == index)
        out[filled & (out == 0)] = index
    return out


def random_mask(rng: np.random.Generator) -> np.ndarray:
    """Blobs of each class plus specks and holes, anywhere (borders included), on a random grid."""
    shape = tuple(int(n) for n in rng.integers(2, 24, 3))
    mask = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 12))):
        lo = [int(rng.integers(0, n)) for n in shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = rng.integers(0, 4)
    noise = rng.random(shape) < rng.uniform(0.0, 0.3)
    mask[noise] = rng.integers(0, 4, int(noise.sum()))
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_same_as_scipy_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rules = [ComponentRule(max_components=1), ComponentRule(min_fraction=0.05), ComponentRule(max_components=2),
             ComponentRule(min_fraction=0.5, max_components=3), ComponentRule()]
    for _ in range(40):
        mask = random_mask(rng)
        np.testing.assert_array_equal(postprocess(mask, CLASSES), scipy_postprocess(mask))
        binary = mask == rng.integers(1, 4)
        for rule in rules:
            np.testing.assert_array_equal(keep_components(binary, rule), scipy_keep(binary, rule))
        np.testing.assert_array_equal(fill_holes_per_slice(binary), scipy_fill(binary))


def test_ties_keep_the_later_component_and_empty_masks() -> None:
    binary = np.zeros((3, 9, 9), bool)
    binary[1, 1:3, 1:3] = True  # first in scan order
    binary[1, 6:8, 6:8] = True  # same size, later
    kept = keep_components(binary, ComponentRule(max_components=1))
    assert kept[1, 6, 6] and not kept[1, 1, 1]
    np.testing.assert_array_equal(kept, scipy_keep(binary, ComponentRule(max_components=1)))
    empty = np.zeros((2, 5, 5), bool)
    assert not keep_components(empty, ComponentRule()).any() and not fill_holes_per_slice(empty).any()
    ring = np.zeros((1, 5, 5), bool)
    ring[0, 1:4, 1:4] = True
    ring[0, 2, 2] = False
    assert fill_holes_per_slice(ring)[0, 2, 2]  # a hole whose box touches the slice border on no side

"""Tiny synthetic slice folders and volumes for the dataset tests (not a test module)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

RAW_VALUES = (0, 76, 29, 150)  # background, vertebra, disc, canal as in the SPIDER PNG export


def raw_mask(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """A mask with blocks of every raw value."""
    mask = np.zeros(shape, dtype=np.uint8)
    rows, cols = shape
    mask[: rows // 2, : cols // 2] = 76
    mask[rows // 2:, : cols // 2] = 29
    mask[: rows // 3, cols // 2:] = 150
    mask[rng.integers(0, rows), rng.integers(0, cols)] = 0
    return mask


def make_slices(root: Path, patients: Dict[str, int], shape: Tuple[int, int] = (24, 20), seed: int = 0,
                dtype: type = np.uint8, rgba: bool = False) -> Tuple[Path, Path]:
    """``root/images`` and ``root/masks`` named like SPIDER: ``<patient>_t2_SPACE_slice<k>.png``."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    top = 255 if dtype == np.uint8 else 4095
    for patient, count in patients.items():
        for k in range(count):
            name = f"{patient}_t2_SPACE_slice{k + 3}.png"
            image = rng.integers(0, top, size=shape).astype(dtype)
            if rgba:
                image = np.dstack([image, image, image, np.full(shape, 255, dtype=dtype)])
            cv2.imwrite(str(images / name), image)
            cv2.imwrite(str(masks / name), raw_mask(rng, shape))
    return images, masks


def tree_snapshot(root: Path) -> Dict[str, float]:
    """Every file under ``root`` with its modification time: to assert nothing was written or changed."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}

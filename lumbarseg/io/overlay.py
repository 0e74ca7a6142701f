"""Pictures of masks a person can check at a glance: sagittal slices with coloured labels and a legend.

Tiles are canonical (RIP) slices shown as radiologists read them (head up, anterior left), drawn
with the true physical aspect ratio (rows and columns may have different spacings). Labels are
alpha-blended and outlined in their class colour; a legend names the classes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from lumbarseg.io.intensity import DEFAULT_NORMALIZATION, normalize
from lumbarseg.io.slices import write_png
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]
Tile = Tuple[np.ndarray, Optional[np.ndarray], str]  # grey slice, class-index mask (or None), caption

ALPHA = 0.45
TILE_HEIGHT = 320
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def display_grey(volume: np.ndarray) -> np.ndarray:
    """A volume scaled to uint8 between its 0.5th and 99.5th percentiles (one scale for all slices)."""
    return (normalize(volume, DEFAULT_NORMALIZATION) * 255).astype(np.uint8)


def pick_slices(mask: np.ndarray, count: int) -> List[int]:
    """Up to ``count`` evenly spaced slice indices (axis 0), among those with labels if any have."""
    labelled = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    pool = labelled if labelled.size else np.arange(mask.shape[0])
    if pool.size <= count:
        return [int(k) for k in pool]
    picks = np.linspace(0, pool.size - 1, count).round().astype(int)
    return [int(pool[i]) for i in picks]


def render_tile(grey: np.ndarray, mask: Optional[np.ndarray], labels: LabelMap, caption: str,
                spacing: Sequence[float], height: int = TILE_HEIGHT) -> np.ndarray:
    """One RGB tile: grey slice, blended labels with outlines, caption; physical aspect ratio."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if mask is not None:
        fg = mask > 0
        rgb[fg] = (1 - ALPHA) * rgb[fg] + ALPHA * labels.colorize(mask[fg]).astype(np.float32)
    rgb = rgb.astype(np.uint8)
    rows, cols = grey.shape
    width = max(1, int(round(height * (cols * spacing[1]) / (rows * spacing[0]))))
    tile = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if rows > height else cv2.INTER_LINEAR)
    if mask is not None:
        small = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        for index in range(1, labels.num_classes):
            contours, _ = cv2.findContours((small == index).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            colour = tuple(int(c) for c in labels.colors[index])
            cv2.drawContours(tile, contours, -1, colour, 1)
    (text_w, text_h), _ = cv2.getTextSize(caption, _FONT, 0.45, 1)
    cv2.rectangle(tile, (0, 0), (text_w + 10, text_h + 10), (24, 24, 24), -1)
    cv2.putText(tile, caption, (5, text_h + 5), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def legend(labels: LabelMap, width: int, title: str = "") -> np.ndarray:
    """A strip with the title and one coloured swatch per foreground class."""
    strip = np.full((34, max(width, 1), 3), 24, dtype=np.uint8)
    x = 8
    if title:
        cv2.putText(strip, title, (x, 22), _FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        x += cv2.getTextSize(title, _FONT, 0.5, 1)[0][0] + 20
    for index, name in enumerate(labels.classes):
        if index == 0:
            continue
        colour = tuple(int(c) for c in labels.colors[index])
        cv2.rectangle(strip, (x, 9), (x + 16, 25), colour, -1)
        cv2.putText(strip, name, (x + 22, 22), _FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        x += 22 + cv2.getTextSize(name, _FONT, 0.5, 1)[0][0] + 18
    return strip


def mosaic(tiles: Sequence[np.ndarray], columns: int, labels: LabelMap, title: str = "") -> np.ndarray:
    """Tiles in a grid (``columns`` per row) above a legend, on a dark background."""
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    gap = 4
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 24, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return np.concatenate([canvas, legend(labels, canvas.shape[1], title)], axis=0)


def overlay_picture(image: np.ndarray, mask: np.ndarray, labels: LabelMap, spacing: Sequence[float],
                    title: str = "", max_slices: int = 12) -> np.ndarray:
    """A mosaic (RGB uint8) of up to ``max_slices`` sagittal slices (canonical axis 0) with their labels."""
    grey = display_grey(image)
    picks = pick_slices(mask, max_slices)
    tiles = [render_tile(grey[k], mask[k], labels, f"slice {k}", spacing) for k in picks]
    columns = min(len(tiles), 6 if len(tiles) > 8 else 4)
    return mosaic(tiles, max(columns, 1), labels, title)


def comparison_png(path: PathLike, image: Optional[np.ndarray], truth: np.ndarray, predicted: np.ndarray,
                   labels: LabelMap, spacing: Sequence[float], title: str = "", max_slices: int = 3) -> None:
    """Ground truth beside prediction for a few slices (rows), on the image or on black without one."""
    grey = display_grey(image) if image is not None else np.zeros(truth.shape, dtype=np.uint8)
    tiles = []
    for k in pick_slices(np.maximum(truth, predicted), max_slices):
        tiles.append(render_tile(grey[k], truth[k], labels, f"truth, slice {k}", spacing))
        tiles.append(render_tile(grey[k], predicted[k], labels, f"predicted, slice {k}", spacing))
    write_png(path, mosaic(tiles, 2, labels, title))

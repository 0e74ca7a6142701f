"""Size limits checked before anything large is allocated: from headers, and for the resampled grid.

A small hostile file can claim a huge grid (a 900 KB ``.nii.gz`` of 3 x 8192 x 8192 zeros), and a
small volume with huge voxels resamples to a huge slice (200 mm voxels at the model's 0.9 mm).
Readers call :func:`check_volume` with the size a header declares, prediction calls it with the
resampled grid, so the process stops with one line naming the flag that raises the limit. Prediction
needs about 40 bytes per voxel (input, float32 copies, per-class probabilities), so the default
``MAX_VOXELS`` (2**27, 512**3) stays within about 5 GB of memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from lumbarseg.errors import LumbarsegError

DEFAULT_MAX_VOXELS = 2**27  # voxels of one volume (512 x 512 x 512), input or resampled
DEFAULT_MAX_SLICE_PIXELS = 2**24  # pixels of one 2D slice (4096 x 4096), PNG or resampled

_limits = {"max_voxels": DEFAULT_MAX_VOXELS, "max_slice_pixels": DEFAULT_MAX_SLICE_PIXELS}


def set_limits(max_voxels: Optional[int] = None, max_slice_pixels: Optional[int] = None) -> None:
    """Raise (or lower) the limits for this process; None keeps the current value."""
    for key, value in (("max_voxels", max_voxels), ("max_slice_pixels", max_slice_pixels)):
        if value is not None:
            if int(value) < 1:
                raise LumbarsegError("--" + key.replace("_", "-"), f"must be >= 1, got {value}")
            _limits[key] = int(value)


def max_voxels() -> int:
    return _limits["max_voxels"]


def max_slice_pixels() -> int:
    return _limits["max_slice_pixels"]


def _product(shape: Sequence[int]) -> int:
    total = 1
    for n in shape:
        total *= int(n)
    return total


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(int(n)) for n in shape)


def check_volume(shape: Sequence[int], source: Union[str, Path], what: str = "volume",
                 slice_axes: Optional[Sequence[int]] = None) -> None:
    """Refuse a grid over the voxel limit (and, with ``slice_axes``, a slice over the pixel limit)."""
    if any(int(n) < 0 for n in shape):
        raise LumbarsegError(source, f"{what}: negative dimension ({_shape_text(shape)})")
    if 0 in [int(n) for n in shape]:
        raise LumbarsegError(source, f"{what}: zero-size dimension ({_shape_text(shape)})")
    if slice_axes is not None:
        check_slice([shape[a] for a in slice_axes], source, what)
    voxels = _product(shape)
    if voxels > max_voxels():
        raise LumbarsegError(source, f"{what}: {_shape_text(shape)} = {voxels:,} voxels exceeds the limit of "
                                     f"{max_voxels():,} (raise it with --max-voxels)")


def check_slice(shape: Sequence[int], source: Union[str, Path], what: str = "slice") -> None:
    """Refuse a 2D slice over the pixel limit."""
    pixels = _product(shape)
    if pixels > max_slice_pixels():
        raise LumbarsegError(source, f"{what}: {_shape_text(shape)} = {pixels:,} pixels per slice exceeds the limit "
                                     f"of {max_slice_pixels():,} (raise it with --max-slice-pixels)")

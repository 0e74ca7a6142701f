"""2D slice images (PNG and what OpenCV decodes): read as greyscale, write atomically."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.io import limits
from lumbarseg.io.atomic import atomic_path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PathLike = Union[str, Path]


def read_grey(path: PathLike) -> np.ndarray:
    """A 2D array (uint8 or uint16) from a grey, RGB or RGBA image; RGB must be grey (R = G = B)."""
    path = Path(path)
    if not path.is_file():
        raise LumbarsegError(path, "no such file")
    with open(path, "rb") as stream:
        head = stream.read(24)
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":  # the size from the header, before decoding
        width, height = struct.unpack(">II", head[16:24])
        limits.check_slice((height, width), path, "PNG image")
    # OpenCV logs "[ERROR] ... readHeader" itself for a broken file; the error below says it in one line.
    # (Its log level, not fd 2: loader threads read slices concurrently.)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.size == 0:
        raise LumbarsegError(path, "cannot decode image (corrupt or unsupported format)")
    if data.ndim == 3:
        colour = data[..., :3]  # OpenCV order is BGR(A); alpha is ignored
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])):
            raise LumbarsegError(path, "colour image: expected greyscale (or RGB with R = G = B)")
        data = colour[..., 0]
    if data.dtype not in (np.uint8, np.uint16):
        raise LumbarsegError(path, f"unsupported pixel type {data.dtype} (expected 8- or 16-bit)")
    return np.ascontiguousarray(data)


def write_png(path: PathLike, array: np.ndarray) -> None:
    """Write a 2D uint8/uint16 (or H x W x 3 RGB uint8) array as PNG, atomically."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(".png", array)
        if not ok:
            raise LumbarsegError(path, "PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())

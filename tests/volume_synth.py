"""Synthetic volumes for reader and predict tests: a labelled spine phantom in any orientation, DICOM series."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lumbarseg.io.readers import write_volume
from lumbarseg.io.volume import Volume, affine_from_spacing, reorient

LABELS = [0, 76, 29, 150]
INTENSITY = {1: 333, 2: 666, 3: 1000}  # class -> raw intensity the threshold model maps to it


def phantom_rip(shape=(8, 40, 36)) -> np.ndarray:
    """Class indices in RIP: separate vertebra blocks, a disc, a canal tube; every block >= 4 voxels thick."""
    classes = np.zeros(shape, np.uint8)
    classes[2:6, 4:12, 4:14] = 1
    classes[2:6, 20:28, 4:14] = 1
    classes[2:6, 14:18, 4:14] = 2
    classes[1:7, 2:38, 20:26] = 3
    return classes


def image_of(classes: np.ndarray) -> np.ndarray:
    image = np.zeros(classes.shape, np.int16)
    for index, value in INTENSITY.items():
        image[classes == index] = value
    return image


def in_orientation(classes_rip: np.ndarray, spacing_rip, orientation: str, oblique: bool = False):
    """The phantom stored in ``orientation``: returns (image Volume, expected class indices in that grid)."""
    rip = Volume(classes_rip, affine_from_spacing(spacing_rip, "RIP"))
    moved, _ = reorient(rip, orientation)
    affine = moved.affine.copy()
    if oblique:  # rotate 10 degrees about the left-right axis: still closest to the same axis codes
        t = np.deg2rad(10)
        rot = np.eye(4)
        rot[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
        affine = rot @ affine
    affine[:3, 3] += [5.0, -3.0, 11.0]
    return Volume(image_of(moved.array), affine), moved.array


def write_case(path: Path, orientation: str = "LPS") -> np.ndarray:
    image, expected = in_orientation(phantom_rip(), (2.0, 0.5, 0.7), orientation)
    write_volume(image, path)
    return expected


def write_dicom_series(volume: Volume, folder: Path) -> None:
    """A minimal MR series, one file per ITK z slice, with the geometry tags a reader needs."""
    folder.mkdir()
    lps = np.diag([-1.0, -1.0, 1.0]) @ volume.affine[:3]
    spacing = np.sqrt((lps[:, :3] ** 2).sum(axis=0))
    direction = lps[:, :3] / spacing
    image = sitk.GetImageFromArray(np.transpose(volume.array).astype(np.int16))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1.41", "0020|000e": series_uid,
            "0020|0037": orientation, "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0013": str(k + 1), "0008|0018": f"{series_uid}.{k + 1}",
            "0018|0050": f"{spacing[2]:.6f}", "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(plane)

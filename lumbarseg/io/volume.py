"""A volume always travels with its geometry; reorient on read, undo on write.

Geometry follows nibabel: ``affine`` maps voxel indices to RAS+ millimetres. lumbarseg's
canonical orientation is **RIP**: axis 0 runs to the patient's Right (one sagittal slice per
index), axis 1 runs Inferior (image rows: head at the top), axis 2 runs Posterior (image
columns: anterior on the left). ``volume.array[k]`` is then a sagittal slice displayed the way
radiologists read it, the way the SPIDER PNG export stores it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Tuple

import numpy as np


def _import_nibabel() -> Any:
    """nibabel, imported without pydicom: ``nibabel.nifti1`` imports pydicom (0.15-0.2 s, a third of a fast
    prediction's start-up) only to parse DICOM header extensions, which lumbarseg never reads. Without it
    nibabel keeps them as raw bytes, as it does where pydicom is not installed. ``sys.modules[name] = None``
    makes that one import fail (Python's import system); pydicom stays importable afterwards (DICOM input)."""
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        import nibabel
        return nibabel
    sys.modules["pydicom"] = None  # type: ignore[assignment]
    try:
        import nibabel
    finally:
        if "pydicom" in sys.modules and sys.modules["pydicom"] is None:
            del sys.modules["pydicom"]
    return nibabel


nib = _import_nibabel()  # every lumbarseg module that reads or writes NIfTI imports this one first
from nibabel import orientations  # noqa: E402

CANONICAL = "RIP"
FORMATS = ("nifti", "metaimage", "dicom", "png")


@dataclass(frozen=True)
class Header:
    """What the reader knew about a volume besides its affine.

    ``geometry`` is "known" (read from the file) or "unknown" (PNG slices: the affine comes from a
    spacing given by the caller, or assumed when ``spacing_assumed``). ``files`` are the slices or the
    DICOM series in order; ``nifti_header`` is the nibabel header a NIfTI was read with (written back);
    ``dicom`` the DICOM headers of the series (what DICOM outputs copy and reference).
    """

    format: str = ""  # one of FORMATS; "" for a volume made in memory
    geometry: str = "known"
    spacing_assumed: bool = False
    files: Tuple[str, ...] = ()
    series_uid: str = ""  # DICOM
    nifti_header: Any = None
    dicom: Tuple[Any, ...] = ()  # DICOM: the series' headers (pydicom, no pixel data), in ``files`` order


@dataclass(frozen=True)
class Volume:
    """A 3D array and the 4x4 affine that places it in the patient (voxel -> RAS+ mm).

    Attributes:
        array: the voxels, 3D.
        affine: 4x4 voxel index -> RAS+ coordinates in mm.
        source: where it was read from (for error messages).
        header: what the reader knew besides the affine (format, whether the geometry is known, the slice
            files or DICOM series, the NIfTI header to write back).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    header: Header = field(default_factory=Header, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")
        if np.asarray(self.affine).shape != (4, 4):
            raise ValueError(f"Volume needs a 4x4 affine, got {np.asarray(self.affine).shape}")

    @property
    def shape(self) -> Tuple[int, int, int]:
        """The array's shape (3 ints)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes such as ``RAS`` or ``RIP`` (the direction each axis runs towards)."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxels (e.g. a mask predicted on this volume)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.array.shape}")
        return Volume(array, self.affine, self.source, self.header)


@dataclass(frozen=True)
class Reorientation:
    """How a volume was brought to an orientation, so the result can be put back."""

    original_affine: np.ndarray
    original_shape: Tuple[int, int, int]
    transform: np.ndarray  # nibabel orientation transform, original -> target

    def undo(self, array: np.ndarray) -> np.ndarray:
        """Map an array in the target orientation back to the original voxel grid."""
        back = _inverse_ornt(self.transform)
        out = orientations.apply_orientation(array, back)
        if out.shape[:3] != self.original_shape:
            raise ValueError(f"undo produced shape {out.shape}, expected {self.original_shape}")
        return out


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform (axis permutation plus flips)."""
    inv = np.zeros_like(ornt)
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        inv[int(dst_axis)] = (src_axis, flip)
    return inv


def reorient(volume: Volume, target: str = CANONICAL) -> Tuple[Volume, Reorientation]:
    """Permute/flip ``volume`` to ``target`` axis codes (no resampling); returns how to undo it."""
    start = orientations.io_orientation(volume.affine)
    goal = orientations.axcodes2ornt(tuple(target))
    transform = orientations.ornt_transform(start, goal)
    array = orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ orientations.inv_ornt_aff(transform, volume.array.shape)
    undo = Reorientation(np.asarray(volume.affine), volume.shape, transform)
    return Volume(np.ascontiguousarray(array), affine, volume.source, volume.header), undo


def affine_from_spacing(spacing: Tuple[float, float, float], orientation: str = CANONICAL) -> np.ndarray:
    """An axis-aligned affine with the given voxel size for arrays stored in ``orientation``."""
    ornt = orientations.axcodes2ornt(tuple(orientation))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world_axis, sign) in enumerate(ornt):
        affine[int(world_axis), axis] = sign * float(spacing[axis])
    return affine


def bounding_box(binary: np.ndarray) -> Tuple[slice, ...]:
    """The smallest box holding every True voxel of ``binary`` (not empty)."""
    box = []
    for axis in range(binary.ndim):
        present = np.flatnonzero(binary.any(axis=tuple(a for a in range(binary.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)

"""Read and write volumes with their geometry: NIfTI, MetaImage, DICOM series, PNG slice folders.

Every reader returns a :class:`~lumbarseg.io.volume.Volume` whose affine maps voxel indices to
RAS+ mm (nibabel's convention). ITK-based formats (MetaImage, DICOM) store LPS geometry and index
voxels (x, y, z) while ``GetArrayFromImage`` returns (z, y, x): both are converted here and
nowhere else. A PNG folder carries no geometry: its slices are taken as a canonical RIP stack
(``array[k]`` = slice k) with the given spacing, and ``header.geometry == "unknown"`` says so.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.io import checks, limits
from lumbarseg.io.atomic import atomic_dir, atomic_path
from lumbarseg.io.slices import read_grey, write_png
from lumbarseg.io.volume import CANONICAL, Header, Volume, affine_from_spacing

PathLike = Union[str, Path]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
PNG_SUFFIX = ".png"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_SLICE_NUMBER = re.compile(r"^(.*?)(\d+)$")


def volume_stem(name: str) -> Optional[str]:
    """``case.nii.gz`` -> ``case``; None when ``name`` has no volume-file suffix."""
    for suffix in NIFTI_SUFFIXES + METAIMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def volume_format(path: PathLike) -> str:
    """``nifti``, ``metaimage``, ``dicom`` or ``png`` from a file's suffix or a folder's content."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        pngs = [p for p in files if p.suffix.lower() == PNG_SUFFIX]
        if pngs and len(pngs) == len(files):
            return "png"  # skip GDCM's scan of every file
        if _dicom_series_ids(path):
            return "dicom"
        if pngs:
            return "png"
        raise LumbarsegError(path, "folder holds neither a DICOM series nor PNG slices")
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(METAIMAGE_SUFFIXES):
        return "metaimage"
    if not path.exists():
        raise LumbarsegError(path, "no such file or folder")
    raise LumbarsegError(path, "unknown volume format (expected .nii, .nii.gz, .mha, .mhd, a DICOM or PNG folder)")


def read_volume(path: PathLike, spacing: Optional[Sequence[float]] = None) -> Volume:
    """Read a 3D volume from any supported format, with its geometry.

    Args:
        path: NIfTI (`.nii`, `.nii.gz`), MetaImage (`.mha`, `.mhd`), a DICOM series folder or a folder of PNG
            slices.
        spacing: (slice, row, col) voxel size in mm, canonical RIP order, for inputs that carry none: PNG
            folders, and NIfTI files whose voxel sizes are zero, negative or NaN (refused without it).

    Returns:
        The `Volume`.

    Raises:
        LumbarsegError: an unreadable or inconsistent file; grids over `lumbarseg.io.limits` are refused from
            the header, before the voxels are read.
    """
    path = Path(path)
    fmt = volume_format(path)
    if not path.exists():
        raise LumbarsegError(path, "no such file or folder")
    if fmt == "nifti":
        volume = _read_nifti(path, spacing)
    elif fmt == "metaimage":
        volume = _read_itk_file(path)
    elif fmt == "dicom":
        volume = _read_dicom(path)
    else:
        volume = read_png_stack(sorted_png_slices(path), spacing=spacing, source=path)
    _check_voxels(volume.array, path)
    return volume


def write_volume(volume: Volume, path: PathLike) -> None:
    """Write a volume as NIfTI (keeping a NIfTI header from `volume.header`) or MetaImage, atomically.

    Args:
        volume: the volume.
        path: `.nii`, `.nii.gz`, `.mha` or `.mhd`.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        _write_nifti(volume, path)
    elif name.endswith(METAIMAGE_SUFFIXES):
        _write_itk(volume, path)
    else:
        raise LumbarsegError(path, "cannot write this format (use .nii, .nii.gz, .mha or .mhd)")


# --- checks ---------------------------------------------------------------------------------------


def _as_3d(array: np.ndarray, source: PathLike) -> np.ndarray:
    """Accept 3D, or 4D with a single 4th element; reject 2D, true 4D and zero-size dimensions."""
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        raise LumbarsegError(source, f"2D image {array.shape}, expected a 3D volume")
    if array.ndim != 3:
        raise LumbarsegError(source, f"{array.ndim}D image {array.shape}, expected a 3D volume (4D only with 1 frame)")
    if 0 in array.shape:
        raise LumbarsegError(source, f"volume has a zero-size dimension {array.shape}")
    return array


def _check_voxels(array: np.ndarray, source: PathLike) -> None:
    if array.dtype.kind not in "biuf":
        raise LumbarsegError(source, f"unsupported voxel type {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise LumbarsegError(source, f"volume has {bad} NaN/Inf voxels")


def _check_affine(affine: np.ndarray, source: PathLike) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise LumbarsegError(source, "degenerate geometry (affine is singular or not finite)")
    return affine


# --- NIfTI ----------------------------------------------------------------------------------------


def _read_nifti(path: Path, spacing: Optional[Sequence[float]] = None) -> Volume:
    import nibabel as nib

    with checks.quiet_libraries():
        try:
            image = nib.load(str(path))  # the header only; nibabel silently "fixes" bad voxel sizes to 1
            raw_zooms = checks.raw_nifti_zooms(image, path)
            limits.check_volume(image.shape, path)
            array = np.asanyarray(image.dataobj)
        except LumbarsegError:
            raise
        except Exception as exc:  # nibabel raises ImageFileError, EOFError, OSError, zlib errors, ...
            raise LumbarsegError(path, f"not a readable NIfTI file ({_short(exc)})") from None
    array = _as_3d(np.asarray(array), path)
    checks.check_scaling(array, image, path)
    affine = checks.nifti_affine(image, raw_zooms, spacing, path)
    return Volume(array, _check_affine(affine, path), str(path), Header("nifti", nifti_header=image.header.copy()))


def _write_nifti(volume: Volume, path: Path) -> None:
    import nibabel as nib

    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    header = volume.header.nifti_header
    header = header.copy() if header is not None else None
    image = nib.Nifti1Image(array, volume.affine, header=header)
    image.header.set_data_dtype(array.dtype)  # a mask written on an image's header must not keep its dtype
    image.header.set_slope_inter(1.0, 0.0)
    if header is not None:
        # keep the input's qform/sform codes (scanner vs aligned) with the affine written
        image.set_sform(volume.affine, code=int(header["sform_code"]) or 2)
        image.set_qform(volume.affine, code=int(header["qform_code"]) or 2)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


# --- ITK formats (MetaImage, DICOM) ---------------------------------------------------------------


def _itk_to_volume(image: Any, source: Path, header: Header) -> Volume:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LumbarsegError(source, f"{image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]  # one frame: drop the 4th axis from the geometry as well
    array = sitk.GetArrayFromImage(image)  # (z, y, x): reversed ITK index order
    array = np.ascontiguousarray(_as_3d(np.transpose(array), source))  # now (i, j, k) = ITK (x, y, z)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return Volume(array, _check_affine(affine, source), str(source), header)


def _volume_to_itk(volume: Volume) -> Any:
    import SimpleITK as sitk

    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array)))
    lps = _LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)[:3]  # (3, 4): LPS linear part + origin
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image


def _read_itk_file(path: Path) -> Volume:
    import SimpleITK as sitk

    checks.check_metaimage_data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with checks.quiet_libraries():
        try:
            reader.ReadImageInformation()  # the header: check the size before the voxels are allocated
            size = reader.GetSize()
            limits.check_volume(size, path)
            image = reader.Execute()
        except RuntimeError as exc:
            raise LumbarsegError(path, f"not a readable MetaImage file ({_itk_message(exc)})") from None
    return _itk_to_volume(image, path, Header("metaimage"))


def _write_itk(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    image = _volume_to_itk(volume)
    try:
        if path.name.lower().endswith(".mhd"):
            # header + raw file pair: write both under their final names in a temp folder, move raw first
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
                sitk.WriteImage(image, str(Path(tmp) / path.name), True)
                written = sorted(Path(tmp).iterdir(), key=lambda p: p.suffix.lower() == ".mhd")
                for item in written:
                    os.replace(item, path.parent / item.name)
        else:
            with atomic_path(path) as tmp:
                sitk.WriteImage(image, str(tmp), True)
    except RuntimeError as exc:
        raise LumbarsegError(path, f"cannot write MetaImage ({_itk_message(exc)})") from None


def _dicom_series_ids(folder: Path) -> List[str]:
    import SimpleITK as sitk

    with checks.quiet_libraries():  # "No Series were found" is an answer, not a warning
        try:
            return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except RuntimeError:
            return []


def _read_dicom(folder: Path) -> Volume:
    import SimpleITK as sitk

    ids = _dicom_series_ids(folder)
    if len(ids) != 1:
        raise LumbarsegError(folder, f"folder holds {len(ids)} DICOM series; give a folder with exactly one")
    with checks.quiet_libraries():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
        checks.check_dicom_series(folder, files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise LumbarsegError(folder, f"cannot read the DICOM series ({_itk_message(exc)})") from None
    header = Header("dicom", series_uid=ids[0], files=tuple(str(f) for f in files))
    if image.GetDimension() == 2:  # a single-slice series is a valid (thin) volume
        image = sitk.JoinSeries(image)
    return _itk_to_volume(image, folder, header)


# --- PNG slice folders ------------------------------------------------------------------------------


def slice_key(path: PathLike) -> Tuple[str, int]:
    """``(stack name, slice number)`` from a file name such as ``118_t2_SPACE_slice7.png``."""
    stem = Path(path).stem
    match = _SLICE_NUMBER.match(stem)
    if not match:
        raise LumbarsegError(path, "slice file name has no slice number at its end")
    return match.group(1), int(match.group(2))


def png_stacks(folder: PathLike) -> Dict[str, List[Path]]:
    """PNG slices of a folder grouped by stack name (the file name without its slice number), sorted."""
    folder = Path(folder)
    stacks: Dict[str, List[Tuple[int, Path]]] = {}
    for file in folder.iterdir():
        if file.suffix.lower() == PNG_SUFFIX and not file.name.startswith("."):
            name, number = slice_key(file)
            stacks.setdefault(name, []).append((number, file))
    out: Dict[str, List[Path]] = {}
    for name, items in sorted(stacks.items()):
        items.sort()
        numbers = [n for n, _ in items]
        if len(set(numbers)) != len(numbers):
            raise LumbarsegError(folder, f"stack {name!r} has two slices with the same number")
        out[name] = [p for _, p in items]
    return out


def sorted_png_slices(folder: PathLike) -> List[Path]:
    """The slices of a folder holding one PNG stack, in slice-number order."""
    stacks = png_stacks(folder)
    if not stacks:
        raise LumbarsegError(folder, "no PNG slices in folder")
    if len(stacks) > 1:
        shown = ", ".join(list(stacks)[:4])
        raise LumbarsegError(folder, f"folder holds {len(stacks)} slice stacks ({shown}...); give one stack")
    return next(iter(stacks.values()))


def read_png_stack(files: Sequence[PathLike], spacing: Optional[Sequence[float]] = None,
                   source: Optional[PathLike] = None) -> Volume:
    """Stack 2D slices as a canonical RIP volume (slice k = ``array[k]``); geometry is unknown.

    ``spacing`` is (between slices, row, column) in mm, default 1 mm each.
    """
    files = [Path(f) for f in files]
    source = Path(source) if source is not None else (files[0].parent if files else Path("."))
    if not files:
        raise LumbarsegError(source, "no PNG slices")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
    if len(spacing) != 3 or min(spacing) <= 0:
        raise LumbarsegError(source, f"spacing must be three positive values (slice, row, col) in mm, got {spacing}")
    first = read_grey(files[0])
    limits.check_volume((len(files), *first.shape), source, "PNG stack")  # before reading the other slices
    slices = [first] + [read_grey(f) for f in files[1:]]
    for f, s in zip(files, slices):
        if s.shape != slices[0].shape:
            raise LumbarsegError(f, f"slice size {s.shape} differs from {slices[0].shape} ({files[0].name})")
    array = np.stack(slices)
    header = Header("png", geometry="unknown", files=tuple(f.name for f in files))
    return Volume(array, affine_from_spacing(spacing, CANONICAL), str(source), header)  # type: ignore[arg-type]


def write_png_stack(volume: Volume, folder: PathLike, names: Optional[Sequence[str]] = None,
                    overwrite: bool = False) -> None:
    """Write ``array[k]`` of a RIP volume as one PNG per slice (uint8/uint16), as a whole folder."""
    array = np.asarray(volume.array)
    if volume.orientation != CANONICAL:
        raise LumbarsegError(folder, f"PNG stacks are written in {CANONICAL}, volume is {volume.orientation}")
    names = list(names) if names is not None else [f"slice{k}.png" for k in range(array.shape[0])]
    if len(names) != array.shape[0]:
        raise LumbarsegError(folder, f"{len(names)} slice names for {array.shape[0]} slices")
    if array.dtype.kind not in "biu" or array.min() < 0 or array.max() > 65535:
        raise LumbarsegError(folder, f"PNG slices need values in 0..65535, got {array.dtype}")
    dtype = np.uint8 if array.max() <= 255 else np.uint16
    try:
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            for k, name in enumerate(names):
                write_png(tmp / name, array[k].astype(dtype))
    except FileExistsError:
        raise LumbarsegError(folder, "output folder exists (use --overwrite)") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _itk_message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = [line for line in lines if "Description:" in line or "ERROR" in line.upper()]
    text = (detail or lines or [type(exc).__name__])[-1]
    return text.replace("Description:", "").strip()[:200]

"""Header checks the readers run before trusting a file: voxel sizes, scaling, sizes, series sampling.

Also :func:`quiet_libraries`, which keeps nibabel/ITK/GDCM/MetaIO chatter from the user (one line only).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.io import limits
from lumbarseg.io.volume import CANONICAL

PathLike = Union[str, Path]
_FD_LOCK = threading.RLock()  # fd 2 is process-wide: one reader at a time swaps it


def raw_nifti_zooms(image: Any, path: Path) -> Optional[Tuple[float, ...]]:
    """pixdim[1:4] as stored (nibabel's loaded header has them fixed) when they define the geometry, else None."""
    import nibabel as nib

    if int(image.header["sform_code"]) > 0:
        return None
    with nib.openers.ImageOpener(str(path)) as stream:
        raw = type(image.header).from_fileobj(stream, check=False)
    return tuple(float(z) for z in raw["pixdim"][1:4])


def nifti_affine(image: Any, raw_zooms: Optional[Sequence[float]], spacing: Optional[Sequence[float]],
                 path: Path) -> np.ndarray:
    """The image's affine; where pixdim defines it and a voxel size is not positive: refused, or ``spacing``."""
    if raw_zooms is None or all(np.isfinite(z) and z > 0 for z in raw_zooms):
        return image.affine
    if spacing is None:
        shown = ", ".join(f"{z:g}" for z in raw_zooms)
        raise LumbarsegError(path, f"voxel size (pixdim) is {shown}: not all positive; give it with "
                                   "--spacing ROW,COL,SLICE (mm)")
    affine = np.where(np.isfinite(image.affine), image.affine, 0.0) + _nan_axes(image.affine)
    return with_spacing(affine, spacing, path)  # documented: only where the file has no voxel size


def _nan_axes(affine: np.ndarray) -> np.ndarray:
    """Unit diagonal entries where a whole column of ``affine`` is NaN (direction unknown: take the axis)."""
    fix = np.zeros((4, 4))
    for axis in range(3):
        if not np.isfinite(affine[:3, axis]).all() or not np.any(affine[:3, axis]):
            fix[axis, axis] = 1.0
    return fix


def with_spacing(affine: np.ndarray, spacing: Optional[Sequence[float]], source: PathLike) -> np.ndarray:
    """``affine`` with each axis scaled to the given (slice, row, col) spacing of the canonical RIP order."""
    from nibabel import orientations

    values = [float(s) for s in (spacing or ())]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise LumbarsegError(source, f"--spacing must be three positive values (slice, row, col) in mm, got {values}")
    affine = np.array(affine, dtype=np.float64)
    transform = orientations.ornt_transform(orientations.io_orientation(affine),
                                            orientations.axcodes2ornt(tuple(CANONICAL)))
    for axis in range(3):
        column = affine[:3, axis]
        affine[:3, axis] = column / np.linalg.norm(column) * values[int(transform[axis, 0])]
    return affine


def check_scaling(array: np.ndarray, image: Any, path: Path) -> None:
    """scl_slope/scl_inter must give finite values that fit in float32 (prediction computes in float32)."""
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    if (slope, inter) == (1.0, 0.0) or array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    limit = float(np.finfo(np.float32).max)
    if not finite.all() or (array.size and float(np.abs(array).max()) > limit):
        raise LumbarsegError(path, f"intensity scaling scl_slope={float(slope):g}, scl_inter={float(inter):g} gives "
                                   "values that are not finite or overflow float32")


def check_metaimage_data_file(path: Path) -> None:
    """A detached header (``.mhd``) names its raw file: say which one is missing (MetaIO only says "data file")."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(8192).decode("latin-1")
    except OSError as exc:
        raise LumbarsegError(path, f"cannot read ({exc.strerror})") from None
    for line in head.splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "elementdatafile":
            value = value.strip()
            if value.upper() != "LOCAL" and not value.upper().startswith("LIST") and "%" not in value:
                raw = Path(value) if Path(value).is_absolute() else path.parent / value
                if not raw.is_file():
                    raise LumbarsegError(path, f"its data file {raw} (ElementDataFile) does not exist")
            return


def check_dicom_series(source: PathLike, files: Sequence[str], headers: Sequence[Any],
                       others: Sequence[Path] = ()) -> None:
    """From the headers only: one frame of reference, size within the limits, slices evenly spaced (none missing,
    none doubled). ``others`` are files of the folder that could not be read (named when a slice is missing)."""
    positions: List[np.ndarray] = []
    normal: Optional[np.ndarray] = None
    rows = cols = frames = 0
    frames_of_reference: List[str] = []
    for name, ds in zip(files, headers):
        try:
            rows, cols = max(rows, int(ds.get("Rows", 0) or 0)), max(cols, int(ds.get("Columns", 0) or 0))
            frames += max(1, int(ds.get("NumberOfFrames", 1) or 1))
            frames_of_reference.append(str(ds.get("FrameOfReferenceUID", "") or ""))
            position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
            if position is not None and orientation is not None and len(position) == 3 and len(orientation) == 6:
                if normal is None:
                    cosines = np.asarray([float(v) for v in orientation])
                    normal = np.cross(cosines[:3], cosines[3:])
                positions.append(np.asarray([float(v) for v in position]))
        except Exception as exc:  # pydicom raises ValueError, struct.error, ... on malformed values
            detail = f"{type(exc).__name__}: {str(exc)[:120]}"
            raise LumbarsegError(name, f"unreadable DICOM header ({detail})") from None
    distinct = sorted(set(frames_of_reference))
    if len(distinct) > 1:
        counts = ", ".join(f"{frames_of_reference.count(uid)} in {uid or '(none)'}" for uid in distinct)
        raise LumbarsegError(source, f"mixed frames of reference in one series ({counts}): its slices do not share one "
                                     "patient coordinate system")
    limits.check_volume((cols, rows, frames), source, "DICOM series", slice_axes=(0, 1))
    if normal is None or len(positions) != len(files) or len(files) < 3:
        return
    order = np.argsort([float(p @ normal) for p in positions])
    distance = np.array([float(positions[i] @ normal) for i in order])
    steps = np.diff(distance)
    typical = float(np.median(steps))
    if typical <= 1e-6:
        doubled = int(np.count_nonzero(steps <= 1e-6))
        raise LumbarsegError(source, f"non-uniform sampling: {doubled} of {len(files)} slices repeat a position "
                                     "(two series or doubled files in one folder?)")
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > max(0.01, 0.1 * typical):
        pair = " and ".join(sorted(Path(files[int(order[i])]).name for i in (worst, worst + 1)))
        names = sorted(p.name for p in others)
        extra = f"; {len(names)} file(s) not in the series, e.g. {names[0]}" if names else ""
        raise LumbarsegError(source, f"non-uniform sampling: slice spacing {steps[worst]:.3g} mm between {pair} where "
                                     f"the series has {typical:.3g} mm (a slice missing, doubled or corrupt){extra}")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep library chatter (Python warnings, nibabel's log, ITK/GDCM/MetaIO messages on fd 2) from the user.

    What C++ code printed is kept and folded into the error if the read fails, else dropped.
    """
    with _FD_LOCK, _quiet():
        yield


@contextlib.contextmanager
def own_stderr() -> Iterator[None]:
    """Hold fd 2 while writing to it, so that a read in another thread does not swap it for its capture meanwhile
    (batch mode reads the next case in the background)."""
    with _FD_LOCK:
        yield


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    sitk = sys.modules.get("SimpleITK")  # ITK readers import it first; a NIfTI read need not pay its import
    itk_warnings = sitk.ProcessObject.GetGlobalWarningDisplay() if sitk else False
    if sitk:
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    nib_log = logging.getLogger("nibabel")
    level = nib_log.level
    nib_log.setLevel(logging.CRITICAL)
    saved = None
    with contextlib.suppress(OSError):
        saved = os.dup(2)
    with tempfile.TemporaryFile() as capture, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if saved is not None:
            os.dup2(capture.fileno(), 2)
        try:
            yield
        except LumbarsegError as exc:
            if saved is not None:
                os.dup2(saved, 2)
            capture.seek(0)
            said = [line.strip() for line in capture.read().decode(errors="replace").splitlines() if line.strip()]
            if said and said[-1] not in exc.problem:
                raise LumbarsegError(exc.source, f"{exc.problem} [{said[-1][:160]}]") from None
            raise
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            nib_log.setLevel(level)
            if sitk:
                sitk.ProcessObject.SetGlobalWarningDisplay(itk_warnings)

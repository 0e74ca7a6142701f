"""DICOM studies as PACS exports hold them: find the series of a folder (flat, nested or with a DICOMDIR).

Only headers are read (pydicom, no pixel data). Files group by StudyInstanceUID, then by
SeriesInstanceUID; each :class:`Series` says what a reader of a study list wants to know: number,
description, plane (from ImageOrientationPatient), a weighting guess (:func:`weighting`), slices,
pixel spacing and thickness. Which series to segment is :mod:`lumbarseg.io.dicom.choice`'s job.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from lumbarseg.errors import LumbarsegError

PathLike = Union[str, Path]
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PLANES = ("sagittal", "coronal", "axial")
# Storage classes whose instances are not images to segment (our own outputs among them).
NOT_IMAGES = {"SEG", "SR", "PR", "KO", "RTSTRUCT", "REG", "DOC"}


@dataclass
class Series:
    """One series of a study: what it is (from its headers) and its instances, ordered along the slice normal."""

    uid: str
    number: Optional[int]
    description: str
    modality: str
    plane: str  # sagittal, coronal, axial, mixed (a localizer), or "-" (no image geometry)
    weighting: str  # T1, T2, STIR or other (a guess: see weighting())
    slices: int
    pixel_spacing: Optional[Tuple[float, float]]  # row, column mm
    thickness: Optional[float]
    headers: List[Any] = field(default_factory=list, repr=False)  # pydicom Datasets without pixel data
    files: List[Path] = field(default_factory=list, repr=False)  # same order as headers (empty when remote)
    localizer: bool = False

    @property
    def is_image(self) -> bool:
        """Holds image slices with a geometry (not an SR, SEG, a presentation state, ...)."""
        return self.plane != "-" and self.modality not in NOT_IMAGES

    def label(self) -> str:
        number = "?" if self.number is None else str(self.number)
        return f'{number} "{self.description}"' if self.description else number

    def summary(self) -> str:
        """``3 "t2_tse_sag" (sagittal T2, 15 slices)``."""
        kind = f"{self.plane} {self.weighting}" if self.is_image else (self.modality or "no images")
        return f"{self.label()} ({kind}, {self.slices} slice{'s' if self.slices != 1 else ''})"


@dataclass
class Study:
    """The series of one StudyInstanceUID found under a folder, and the folder holding all its files."""

    uid: str
    folder: Path
    series: List[Series]
    study_id: str = ""
    date: str = ""
    unreadable: List[Path] = field(default_factory=list)  # DICOM-looking files whose header could not be read

    def find(self, key: str) -> Optional[Series]:
        """A series by number or SeriesInstanceUID."""
        return next((s for s in self.series if s.uid == key or (s.number is not None and str(s.number) == key)), None)


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _number(ds: Any, keyword: str) -> Optional[float]:
    try:
        value = ds.get(keyword)
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def plane_of(orientation: Optional[Sequence[float]]) -> str:
    """sagittal / coronal / axial from ImageOrientationPatient: the axis the slice normal runs along most."""
    if orientation is None or len(orientation) != 6:
        return "-"
    try:
        r, c = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]]
    except (TypeError, ValueError):
        return "-"
    normal = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]]
    magnitudes = [abs(v) for v in normal]
    if max(magnitudes) < 1e-6:
        return "-"
    return PLANES[magnitudes.index(max(magnitudes))]


_WORDS = {"STIR": re.compile(r"stir|tirm|\bir\b|fs_?ir", re.I), "T1": re.compile(r"t1", re.I),
          "T2": re.compile(r"t2", re.I)}
_LOCALIZER = re.compile(r"loc|scout|survey|plan|3-?pl|tripilot", re.I)


def weighting(description: str, te: Optional[float], tr: Optional[float], ti: Optional[float]) -> str:
    """A guess of T1 / T2 / STIR / other: the series description's words first (``stir``/``tirm``, ``t1``,
    ``t2``), else the timing: an inversion time of 100-250 ms is STIR, TR < 1000 ms with TE < 30 ms is T1,
    TR >= 1500 ms with TE >= 60 ms is T2; anything else (proton density, FLAIR, unknown timing) is other."""
    for name in ("STIR", "T1", "T2"):
        if _WORDS[name].search(description or ""):
            return name
    if ti is not None and 100 <= ti <= 250:
        return "STIR"
    if te is not None and tr is not None:
        if tr < 1000 and te < 30:
            return "T1"
        if tr >= 1500 and te >= 60:
            return "T2"
    return "other"


def is_dicom_file(path: Path) -> bool:
    """A Part 10 file (``DICM`` at byte 128), or a file named ``*.dcm``/``*.dicom``/``*.ima`` (raw data sets)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES


def read_header(path: Path) -> Any:
    """The data set without its pixel data; LumbarsegError naming the file when it cannot be parsed."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        ds.get("SeriesInstanceUID")  # parse lazily read elements now
        if "StudyInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
            raise ValueError("no StudyInstanceUID/SeriesInstanceUID")
        return ds
    except Exception as exc:  # pydicom raises InvalidDicomError, struct.error, ValueError, EOFError, ...
        raise LumbarsegError(path, f"unreadable DICOM header ({type(exc).__name__}: {str(exc)[:120]})") from None


def dicomdir_files(dicomdir: Path) -> List[Path]:
    """The files a DICOMDIR lists (ReferencedFileID of its records), relative to its folder."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(dicomdir), force=True)
        records = ds.DirectoryRecordSequence
    except Exception as exc:
        raise LumbarsegError(dicomdir, f"unreadable DICOMDIR ({type(exc).__name__}: {str(exc)[:120]})") from None
    files = []
    for record in records:
        parts = record.get("ReferencedFileID")
        if parts:
            parts = [parts] if isinstance(parts, str) else list(parts)
            files.append(dicomdir.parent.joinpath(*[str(p) for p in parts]))
    return files


def candidate_files(path: Path) -> List[Path]:
    """The files to read: a DICOMDIR's list when ``path`` is or holds one, else every DICOM-looking file below."""
    if path.is_file() and path.name.upper() == "DICOMDIR":
        return dicomdir_files(path)
    if (path / "DICOMDIR").is_file():
        return dicomdir_files(path / "DICOMDIR")
    found = []
    for root, folders, names in os.walk(path):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            file = Path(root) / name
            if not name.startswith(".") and name.upper() != "DICOMDIR" and is_dicom_file(file):
                found.append(file)
    return found


def _series_of(headers: List[Tuple[Path, Any]]) -> Series:
    import numpy as np

    first = headers[0][1]
    orientations = {tuple(round(float(v), 3) for v in h.get("ImageOrientationPatient") or ()) for _, h in headers}
    planes = {plane_of(o) for o in orientations}
    plane = planes.pop() if len(planes) == 1 else "mixed"
    positioned = [(p, h) for p, h in headers if h.get("ImagePositionPatient") is not None]
    if plane in PLANES and len(positioned) == len(headers):  # order along the slice normal, as a reader stacks them
        o = [float(v) for v in first.ImageOrientationPatient]
        normal = np.cross(o[:3], o[3:])
        headers = sorted(headers, key=lambda item: float(np.dot(normal, [float(v) for v in
                                                                         item[1].ImagePositionPatient])))
    else:
        headers = sorted(headers, key=lambda item: (int(_number(item[1], "InstanceNumber") or 0), str(item[0])))
    description = _text(first, "SeriesDescription") or _text(first, "ProtocolName")
    image_type = " ".join(str(v) for v in (first.get("ImageType") or []))
    spacing = first.get("PixelSpacing")
    number = _number(first, "SeriesNumber")
    frames = sum(max(1, int(_number(h, "NumberOfFrames") or 1)) for _, h in headers)
    return Series(
        uid=str(first.SeriesInstanceUID), number=int(number) if number is not None else None, description=description,
        modality=_text(first, "Modality"), plane=plane,
        weighting=weighting(description, _number(first, "EchoTime"), _number(first, "RepetitionTime"),
                            _number(first, "InversionTime")),
        slices=frames, pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None,
        thickness=_number(first, "SliceThickness"), headers=[h for _, h in headers],
        files=[p for p, _ in headers if p != Path()],
        localizer=plane == "mixed" or "LOCALIZER" in image_type.upper() or bool(_LOCALIZER.search(description)),
    )


def group(items: Iterable[Tuple[Path, Any]], where: Path, unreadable: Sequence[Path] = ()) -> List[Study]:
    """Headers (with their files, or ``Path()`` for those of a server) grouped into studies and series."""
    studies: Dict[str, Dict[str, List[Tuple[Path, Any]]]] = {}
    for path, ds in items:
        studies.setdefault(str(ds.StudyInstanceUID), {}).setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    out = []
    for uid, by_series in studies.items():
        series = sorted((_series_of(members) for members in by_series.values()),
                        key=lambda s: (s.number is None, s.number or 0, s.uid))
        files = [f for s in series for f in s.files]
        folder = Path(os.path.commonpath([str(f.parent) for f in files])) if files else where
        first = series[0].headers[0]
        out.append(Study(uid, folder, series, _text(first, "StudyID"), _text(first, "StudyDate"),
                         [p for p in unreadable if folder in p.parents]))
    return sorted(out, key=lambda s: (str(s.folder), s.date, s.uid))


def find_studies(path: PathLike) -> List[Study]:
    """Every study under ``path`` (a folder, or a DICOMDIR file); [] when it holds no DICOM file."""
    path = Path(path)
    items, unreadable = [], []
    for file in candidate_files(path):
        if not file.is_file():
            unreadable.append(file)  # listed by a DICOMDIR but absent
            continue
        try:
            items.append((file, read_header(file)))
        except LumbarsegError:
            unreadable.append(file)
    root = path.parent if path.is_file() else path
    return group(items, root, unreadable)


def series_table(study: Study) -> List[Dict[str, Any]]:
    """One row per series, what ``lumbarseg series`` prints."""
    rows = []
    for s in study.series:
        rows.append({
            "number": "" if s.number is None else s.number, "description": s.description, "modality": s.modality,
            "plane": s.plane + (" (localizer)" if s.localizer and s.plane != "mixed" else ""),
            "weighting": s.weighting if s.is_image else "-", "slices": s.slices,
            "pixel_mm": "" if s.pixel_spacing is None else f"{s.pixel_spacing[0]:.3g} x {s.pixel_spacing[1]:.3g}",
            "thickness_mm": "" if s.thickness is None else f"{s.thickness:.3g}", "uid": s.uid,
        })
    return rows

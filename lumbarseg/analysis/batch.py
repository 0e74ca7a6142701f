"""Measure one mask or a folder of masks: the function behind ``lumbarseg measure``.

Cases are found as everywhere else (a file, a DICOM/PNG folder, or a folder of them). Outputs go
to ``out_dir`` (see :mod:`lumbarseg.analysis.report`); a batch adds ``spine.csv`` with every
case's levels. A single case fails with its error and writes nothing; in a batch a failing case
is reported and skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from lumbarseg.analysis.measurements import Thresholds
from lumbarseg.analysis.report import csv_text, output_names, rows, write_case
from lumbarseg.analysis.spine import SpineReport, analyse, measure_mask
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import write_text
from lumbarseg.io.cases import Case, find_cases
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]
BATCH_CSV = "spine.csv"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_outputs(cases: Sequence[Case], mask: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LumbarsegError(out_dir, "output must be a folder")
    for case in cases:
        if _inside(out_dir, case.path) and case.path.is_dir() or out_dir.resolve() == case.path.resolve():
            raise LumbarsegError(out_dir, f"output folder would write into the input {case.path}")
        if not overwrite:
            for name in output_names(case.name).values():
                if (out_dir / name).exists():
                    raise LumbarsegError(out_dir / name, "output exists (use --overwrite)")
    if mask.is_dir() and _inside(out_dir, mask):
        raise LumbarsegError(out_dir, f"output folder is inside the input folder {mask}")


def _image_for(case: Case, images: List[Case], single: bool) -> Optional[Case]:
    if single and len(images) == 1:
        return images[0]
    return next((c for c in images if c.name == case.name), None)


def measure_prediction(prediction: Any, case: str = "", thresholds: Optional[Thresholds] = None) -> SpineReport:
    """The spine report of a :class:`~lumbarseg.inference.predict.Prediction` (``predict --measure``)."""
    index = prediction.mask.with_array(prediction.class_indices())
    return analyse(index, prediction.classes, case, prediction.image, thresholds)


def measure_path(mask: PathLike, out_dir: PathLike, label_map: Union[str, LabelMap] = "lumbarseg",
                 image: Optional[PathLike] = None, spacing: Optional[Sequence[float]] = None,
                 thresholds: Optional[Thresholds] = None,
                 overwrite: bool = False) -> Tuple[List[SpineReport], List[str]]:
    """Measure every case at ``mask``; returns the reports and the names of the cases that failed."""
    mask, out_dir = Path(mask), Path(out_dir)
    label_map = label_map if isinstance(label_map, LabelMap) else LabelMap.load(label_map)
    cases = find_cases(mask)
    images = find_cases(image) if image is not None else []
    _check_outputs(cases, mask, out_dir, overwrite)
    single = len(cases) == 1
    reports: List[SpineReport] = []
    failed: List[str] = []
    for case in cases:
        try:
            image_case = _image_for(case, images, single)
            volume = case.read(spacing)
            picture = image_case.read(spacing) if image_case is not None else None
            report = measure_mask(volume, label_map, case.name, picture, thresholds)
            write_case(report, out_dir)
            reports.append(report)
        except (LumbarsegError, MemoryError, ValueError) as exc:
            error = exc if isinstance(exc, LumbarsegError) else LumbarsegError(
                case.source, f"{type(exc).__name__}: {exc}")
            if single:
                raise error from None
            failed.append(case.name)
            print(f"lumbarseg: error: {error}", file=sys.stderr)
    if not single and reports:
        write_batch_csv(reports, out_dir / BATCH_CSV)
    return reports, failed


def write_batch_csv(reports: Sequence[SpineReport], path: PathLike) -> None:
    """One CSV with every case's levels."""
    write_text(path, csv_text([row for report in reports for row in rows(report)]))

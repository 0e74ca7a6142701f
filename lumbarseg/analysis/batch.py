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
from lumbarseg.io.atomic import exists_error, write_text
from lumbarseg.io.cases import Case, find_cases
from lumbarseg.io.paths import check_not_input
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]
BATCH_CSV = "spine.csv"


def _check_outputs(cases: Sequence[Case], inputs: Sequence[Tuple[str, Optional[Path]]], out_dir: Path,
                   overwrite: bool) -> None:
    """Before any work: the output folder is no input (:func:`lumbarseg.io.paths.check_not_input`), and no
    case's output exists unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LumbarsegError(out_dir, "output must be a folder")
    check_not_input(out_dir, [*inputs, *(("", case.path) for case in cases)])
    if not overwrite:
        for case in cases:
            for name in output_names(case.name).values():
                if (out_dir / name).exists():
                    raise exists_error(out_dir / name)


def _image_for(case: Case, images: List[Case], single: bool) -> Optional[Case]:
    if single and len(images) == 1:
        return images[0]
    return next((c for c in images if c.name == case.name), None)


def measure_prediction(prediction: Any, case: str = "", thresholds: Optional[Thresholds] = None) -> SpineReport:
    """The spine report of a `Prediction` (`lumbarseg predict --measure`).

    Args:
        prediction: what `predict` returned.
        case: the case's name in the report.
        thresholds: stenosis and listhesis thresholds (mm).

    Returns:
        The `SpineReport`.
    """
    index = prediction.mask.with_array(prediction.class_indices())
    return analyse(index, prediction.classes, case, prediction.image, thresholds)


def measure_path(mask: PathLike, out_dir: PathLike, label_map: Union[str, LabelMap] = "lumbarseg",
                 image: Optional[PathLike] = None, spacing: Optional[Sequence[float]] = None,
                 thresholds: Optional[Thresholds] = None,
                 overwrite: bool = False) -> Tuple[List[SpineReport], List[str]]:
    """Measure one mask file or every mask of a folder and write their spine reports: `lumbarseg measure`.

    Args:
        mask: a mask file, or a folder of mask cases.
        out_dir: the output folder (`<case>_spine.json/.csv/.png`, `<case>_levels.*`, `spine.csv` for a folder).
        label_map: the masks' label map (default `lumbarseg`: class indices 0-3).
        image: the MRI volume (or folder of them, matched by name) for the pictures.
        spacing: (slice, row, col) voxel size in mm for PNG masks, which carry none.
        thresholds: stenosis and listhesis thresholds (mm).
        overwrite: replace existing outputs.

    Returns:
        The reports of the cases measured, and the names of the cases that failed.
    """
    mask, out_dir = Path(mask), Path(out_dir)
    label_map = label_map if isinstance(label_map, LabelMap) else LabelMap.load(label_map)
    cases = find_cases(mask)
    images = find_cases(image) if image is not None else []
    _check_outputs(cases, [("-i", mask), ("--image", Path(image) if image is not None else None)], out_dir,
                   overwrite)
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

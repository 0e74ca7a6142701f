"""What ``lumbarseg series`` prints: each study's series as a table, the one to segment marked."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.dicom.choice import RULE, choose
from lumbarseg.io.dicom.study import Study, find_studies, series_table

COLUMNS = [("", 1), ("number", 6), ("description", 24), ("plane", 22), ("weighting", 9), ("slices", 6),
           ("pixel_mm", 13), ("thickness_mm", 12)]


def studies_at(path: str, token: Optional[str] = None) -> List[Study]:
    """The studies of a folder or DICOMDIR, or of a DICOMweb study/series URL (headers only)."""
    from lumbarseg.io.dicom import web

    if web.is_url(path):
        return [case.study for case in web.find_cases(path, token=token)]
    if not Path(path).exists():
        raise LumbarsegError(path, "no such file or folder")
    studies = find_studies(path)
    if not studies:
        raise LumbarsegError(path, "no DICOM files found (flat, nested or listed by a DICOMDIR)")
    return studies


def study_listing(path: str, series: Optional[str] = None, token: Optional[str] = None) -> str:
    """One block per study: a header line, the series table, and which series is segmented and why."""
    lines = []
    for study in studies_at(path, token):
        where = str(study.folder) if str(study.folder) not in ("", ".") else path
        lines.append(f"study {study.uid} (ID {study.study_id or '-'}, date {study.date or '-'}) in {where}")
        try:
            choice = choose(study, series, where)
            chosen, why = choice.series.uid, choice.reason
        except LumbarsegError as exc:
            chosen, why = None, f"none to segment: {exc.problem}"
        lines.append("  ".join(f"{name:<{width}}" for name, width in COLUMNS).rstrip())
        for row in series_table(study):
            mark = "*" if row["uid"] == chosen else " "
            cells = [mark] + [str(row[name])[:width] for name, width in COLUMNS[1:]]
            lines.append("  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, COLUMNS)).rstrip())
        lines.append(f"* {why}")
        if study.unreadable:
            lines.append(f"  {len(study.unreadable)} file(s) with an unreadable header, e.g. "
                         f"{study.unreadable[0].name}")
        lines.append("")
    lines.append(f"rule: {RULE}; override with --series NUMBER|UID")
    return "\n".join(lines) + "\n"

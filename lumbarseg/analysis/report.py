"""What ``lumbarseg measure`` writes for a case, each file atomically.

``<case>_spine.json`` (levels with names, flags and measurements whose keys carry the unit),
``<case>_spine.csv`` (one row per level), ``<case>_spine.png`` (the figure),
``<case>_levels.nii.gz`` (instance labels in the input's grid and geometry) and its label tables:
``<case>_levels.label.txt`` (ITK-SNAP label description) and ``<case>_levels.ctbl`` (3D Slicer
colour table). A batch adds ``spine.csv`` with every case's rows.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from lumbarseg import __version__
from lumbarseg.analysis.figure import spine_png
from lumbarseg.analysis.levels import label_table
from lumbarseg.analysis.spine import SpineReport
from lumbarseg.io.atomic import write_text
from lumbarseg.io.readers import write_volume

PathLike = Union[str, Path]
MEASUREMENT_COLUMNS = [
    "anterior_height_mm", "middle_height_mm", "posterior_height_mm", "depth_mm", "wedge_ratio", "biconcave_ratio",
    "height_loss_pct", "genant_grade", "disc_height_index", "canal_ap_mm", "listhesis_mm", "listhesis_pct",
    "meyerding_grade",
]
CSV_COLUMNS = ["case", "name", "kind", "partial", "uncertain", "label_value", "mid_sagittal_slice",
               *MEASUREMENT_COLUMNS, "lordosis_deg", "lordosis_l1_s1_deg", "flags", "levels_confidence"]
NAMING_NOTE = ("names count up along the column from L5-S1 (the lowest disc, unless a whole body lies under it); "
               "transitional anatomy (lumbarisation, sacralisation) cannot be told from a lumbar field of view: "
               "count from C2 on a whole-spine localizer where it matters")


def output_names(case: str) -> Dict[str, str]:
    """File names of one case's outputs."""
    return {"json": f"{case}_spine.json", "csv": f"{case}_spine.csv", "png": f"{case}_spine.png",
            "levels": f"{case}_levels.nii.gz", "itksnap": f"{case}_levels.label.txt",
            "slicer": f"{case}_levels.ctbl"}


def to_document(report: SpineReport) -> Dict[str, Any]:
    """The JSON document of a report."""
    levels = [level.to_dict() for level in report.levels]
    return {
        "case": report.case, "lumbarseg_version": __version__,
        "spacing_mm": [round(s, 4) for s in report.spacing], "orientation": "RIP (canonical slices)",
        "levels_confidence": report.levels_confidence,
        "levels_confidence_notes": list(report.confidence_notes),
        "levels": levels,
        "alignment": {k: (None if v is None else round(float(v), 2)) for k, v in report.alignment.items()},
        "thresholds": asdict(report.thresholds),
        "notes": [*report.notes, NAMING_NOTE, "listhesis_mm > 0: anterolisthesis, < 0: retrolisthesis",
                  "lordosis_deg > 0: endplate lines open anteriorly (lordosis)"],
    }


def rows(report: SpineReport) -> List[Dict[str, Any]]:
    """One CSV row per level (lordosis on the L1 row, where it starts)."""
    out = []
    for entry in to_document(report)["levels"]:
        row: Dict[str, Any] = {"case": report.case, **{k: entry[k] for k in ("name", "kind", "partial", "uncertain",
                                                                               "label_value", "mid_sagittal_slice")}}
        row.update({k: entry["measurements"].get(k) for k in MEASUREMENT_COLUMNS})
        if entry["name"] == "L1":
            row.update({k: report.alignment.get(k) for k in ("lordosis_deg", "lordosis_l1_s1_deg")})
        row["flags"] = "; ".join(entry["flags"])
        row["levels_confidence"] = report.levels_confidence
        out.append(row)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    return str(value)


def csv_text(all_rows: Sequence[Dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in all_rows:
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def itksnap_table(report: SpineReport) -> str:
    """ITK-SNAP label description file (Segmentation > Import Label Descriptions)."""
    lines = ["################################################", "# ITK-SnAP Label Description File",
             f"# lumbarseg {__version__} levels of {report.case}",
             "# Columns = IDX -R- -G- -B- -A-- VIS MSH  LABEL", "################################################",
             '    0     0    0    0        0  0  0    "Clear Label"']
    for value, name, (r, g, b) in label_table(report.levels):
        lines.append(f'{value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name}"')
    return "\n".join(lines) + "\n"


def slicer_table(report: SpineReport) -> str:
    """3D Slicer colour table (``.ctbl``: value name R G B A; names without spaces)."""
    lines = [f"# lumbarseg {__version__} levels of {report.case}", "0 background 0 0 0 0"]
    for value, name, (r, g, b) in label_table(report.levels):
        lines.append(f"{value} {name.replace(' (partial)', '_partial').replace(' ', '_')} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def write_case(report: SpineReport, out_dir: PathLike, pictures: bool = True) -> Dict[str, Path]:
    """Write every output of one case into ``out_dir``; returns their paths. ``pictures=False`` writes only the
    tables (JSON, CSV): the picture and the levels mask went into DICOM objects instead."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in output_names(report.case or "spine").items()}
    if not pictures:
        paths = {k: paths[k] for k in ("json", "csv")}
    write_text(paths["json"], json.dumps(to_document(report), indent=2) + "\n")
    write_text(paths["csv"], csv_text(rows(report)))
    if pictures:
        write_volume(report.levels_volume, paths["levels"])
        write_text(paths["itksnap"], itksnap_table(report))
        write_text(paths["slicer"], slicer_table(report))
        spine_png(report, paths["png"])
    return paths


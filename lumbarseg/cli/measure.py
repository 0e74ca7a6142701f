"""`lumbarseg measure`: vertebral levels, instance masks and clinical measurements from a spine mask."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lumbarseg.cli.options import Formatter, add_spacing, parse_spacing, volume_spacing


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "measure", help="name the levels of a spine mask and measure them (heights, canal, lordosis, listhesis)",
        description="Split a vertebra/disc/canal mask into named levels (L5-S1 = the lowest disc) and measure "
                    "each on its mid-sagittal plane. A folder of masks is a batch with a CSV over all cases.",
        formatter_class=Formatter,
    )
    parser.add_argument("-i", "--input", required=True, type=Path,
                        help="mask file, DICOM/PNG folder, or a folder of masks")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--label-map", default="lumbarseg",
                        help="raw mask values -> classes: built-in name (lumbarseg, spider-png, spider) or YAML "
                             "(default: lumbarseg, the values predict writes)")
    parser.add_argument("--image", type=Path, default=None,
                        help="the image(s), matched by case name, for the figure (a DICOM study: its series is chosen "
                             "as predict chooses it, or with --series)")
    parser.add_argument("--series", default=None, metavar="NUMBER|UID",
                        help="the series of DICOM studies (mask and image) to read (default: the rule of `lumbarseg "
                             "series`: sagittal, T2-weighted, the most slices, the finest in-plane spacing)")
    add_spacing(parser, "voxel size in mm for PNG slice stacks (default 1 mm each)")
    parser.add_argument("--canal-relative", type=float, default=12.0, help="relative canal stenosis below MM (12)")
    parser.add_argument("--canal-absolute", type=float, default=10.0, help="absolute canal stenosis below MM (10)")
    parser.add_argument("--listhesis", type=float, default=3.0, help="flag a slip from MM (3)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.analysis import Thresholds, measure_path

    thresholds = Thresholds(args.canal_relative, args.canal_absolute, args.listhesis)
    spacing = volume_spacing(parse_spacing(args.spacing), slice_default=1.0)
    reports, failed = measure_path(args.input, args.output, args.label_map, args.image, spacing, thresholds,
                                   overwrite=args.overwrite, series=args.series,
                                   on_note=lambda line: print(f"lumbarseg: {line}", file=sys.stderr))
    for report in reports:
        lordosis = report.alignment.get("lordosis_deg")
        extra = f", lordosis L1-L5 {lordosis:.1f} deg" if lordosis is not None else ""
        span = f"{report.levels[0].name} to {report.levels[-1].name}"
        print(f"{report.case}: {len(report.levels)} levels ({span}){extra}", file=sys.stderr)
    print(f"{len(reports)} case(s) measured -> {args.output}", file=sys.stderr)
    if failed:
        print(f"lumbarseg: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

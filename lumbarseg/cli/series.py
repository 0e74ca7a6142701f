"""`lumbarseg series`: list the series of DICOM studies, and which one predict would segment."""
from __future__ import annotations

import argparse

from lumbarseg.cli.options import add_dicom_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "series", help="list the series of a DICOM study folder (flat, nested, DICOMDIR) or DICOMweb study URL",
        description="List each study's series (number, description, plane, weighting guess, slices, pixel spacing, "
                    "thickness) and mark the one predict and measure segment (* = by the rule, or --series).")
    parser.add_argument("path", help="a study folder, a folder of studies, a DICOMDIR, or a DICOMweb study URL")
    add_dicom_options(parser, series_help="mark this series instead of the rule's")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.io.dicom.listing import study_listing

    print(study_listing(args.path, args.series, args.dicomweb_token), end="")
    return 0

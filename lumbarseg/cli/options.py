"""Options that several commands share, spelled one way everywhere."""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Tuple

from lumbarseg.errors import LumbarsegError

SPACING_METAVAR = "ROW,COL[,SLICE]"
Spacing = Tuple[float, float, Optional[float]]  # row, col, between slices (None: not given)


class _SpacingAction(argparse.Action):
    """Takes one word, or the deprecated three; shown in help as the one word."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, values)


class Formatter(argparse.HelpFormatter):
    """The default formatter, except that ``--spacing`` shows as ``--spacing ROW,COL[,SLICE]``."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, _SpacingAction):
            return SPACING_METAVAR
        return super()._format_args(action, default_metavar)


def add_model(parser: argparse.ArgumentParser, extra: str = "") -> None:
    """``--model NAME|FILE``: a shipped model's name or an ONNX file (resolved by the Python API)."""
    from lumbarseg.model.registry import MODEL_HELP

    parser.add_argument("--model", default=None, metavar="NAME|M.onnx", help=MODEL_HELP + extra)


SERIES_HELP = ("the series of a DICOM study to segment (default: the rule `lumbarseg series` shows: sagittal, "
               "T2-weighted, then the most slices and the finest in-plane spacing)")


def add_dicom_options(parser: argparse.ArgumentParser, series_help: str = SERIES_HELP) -> None:
    """``--series NUMBER|UID`` (which series of a DICOM study) and ``--dicomweb-token``."""
    parser.add_argument("--series", default=None, metavar="NUMBER|UID", help=series_help)
    parser.add_argument("--dicomweb-token", default=None, metavar="TOKEN",
                        help="bearer token for DICOMweb URLs (else $LUMBARSEG_DICOMWEB_TOKEN, user:password in the "
                             "URL, or ~/.netrc); never printed")


def add_spacing(parser: argparse.ArgumentParser, help: str) -> None:
    """``--spacing ROW,COL[,SLICE]`` in mm (the old ``--spacing SLICE ROW COL`` still works, with a warning);
    create ``parser`` with ``formatter_class=Formatter``."""
    parser.add_argument("--spacing", nargs="+", action=_SpacingAction, metavar=SPACING_METAVAR, help=help)


def parse_spacing(values: Optional[List[str]]) -> Optional[Spacing]:
    """(row, col, slice or None) mm from ``--spacing``'s words."""
    if not values:
        return None
    if len(values) == 3 and not any("," in v for v in values):
        print("lumbarseg: warning: --spacing SLICE ROW COL is deprecated and will be removed; "
              f"write --spacing {values[1]},{values[2]},{values[0]} (ROW,COL,SLICE)", file=sys.stderr)
        values = [f"{values[1]},{values[2]},{values[0]}"]
    text = ",".join(values)
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(values) != 1 or len(numbers) not in (2, 3) or min(numbers) <= 0:
        raise LumbarsegError("--spacing", f"need {SPACING_METAVAR} positive millimetres, got {' '.join(values)!r}")
    return numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None


def volume_spacing(spacing: Optional[Spacing], slice_default: Optional[float] = None) -> Optional[tuple]:
    """The API's (slice, row, col) order of volume axes; a slice spacing not given is ``slice_default``."""
    if spacing is None:
        return None
    row, col, between = spacing
    return (between if between is not None else slice_default, row, col)

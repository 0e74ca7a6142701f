"""`lumbarseg models`: the shipped models, by name, with their files and cards."""
from __future__ import annotations

import argparse
from typing import Any, Dict, List


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the shipped models (names for --model and train --init)",
        description="The models that ship with lumbarseg: name, in-plane spacing, input slices (2.5D models "
                    "also see neighbouring slices, at these distances), trainable parameters, purpose, ONNX file "
                    "and model card. * marks the default.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.model.registry import describe

    print(format_table(describe()))
    return 0


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A plain-text table, then each model's file and card (long paths on their own lines)."""
    header = ("name", "spacing (mm)", "input slices (mm)", "parameters", "for")
    cells = [header] + [(
        row["name"] + ("*" if row["default"] else ""),
        " x ".join(f"{s:g}" for s in row["spacing"]) if row["spacing"] else "-",
        _slices(row["slices"]),
        f"{row['parameters'] / 1e6:.2f} M" if row["parameters"] else "-",
        row["purpose"]) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    for row in rows:
        lines.append(f"{row['name']}: file {row['file'] or 'not installed'}, card {row['card'] or 'not installed'}")
    return "\n".join(lines)


def _slices(offsets: Any) -> str:
    if not offsets:
        return "-"
    return "1 (2D)" if len(offsets) == 1 else f"{len(offsets)}: {', '.join(f'{o:+g}' if o else '0' for o in offsets)}"

"""`lumbarseg models`: the shipped models, by name, with their files and cards; or the training record of models
given by name or file."""
from __future__ import annotations

import argparse
from typing import Any, Dict, List

from lumbarseg.model.registry import MODEL_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the shipped models (names for --model and train --init), or show a model's record",
        description="The models that ship with lumbarseg: name, in-plane spacing, input slices (2.5D models "
                    "also see neighbouring slices, at these distances), trainable parameters, purpose, ONNX file "
                    "and model card. * marks the default. With MODEL arguments: each model's record (classes, "
                    "input, network, data, training, and the world it was trained in: launcher, processes, hosts, "
                    "devices, global and per-rank batch).")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=MODEL_CHOICES)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.model.registry import describe

    if not args.models:
        print(format_table(describe()))
        return 0
    from lumbarseg.model import metadata
    from lumbarseg.model.record import summary
    from lumbarseg.model.registry import resolve_model

    paths = [resolve_model(model) for model in args.models]  # every name checked before anything is printed
    for path in paths:
        lines = summary(metadata.read(path))
        width = max(len(name) for name, _ in lines)
        print("\n".join([str(path)] + [f"  {name.ljust(width)}  {text}" for name, text in lines]))
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

"""`lumbarseg export`: a run's checkpoint as a self-describing ONNX model."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a training run as an ONNX model with metadata",
        description="Write RUN_DIR's best (highest validation mean Dice) or last checkpoint as ONNX: "
                    "input 'image' (N,1,H,W) -> output 'probabilities' (N,C,H,W), metadata embedded.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.onnx")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing MODEL.onnx (never a run's file)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.training.trainer import export_run

    out = export_run(args.run_dir, args.output, args.checkpoint, args.overwrite)
    print(out)
    return 0

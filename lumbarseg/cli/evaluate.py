"""`lumbarseg evaluate`: score predictions against ground truth, or a model on a dataset split."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lumbarseg.cli.limits import add_limit_options
from lumbarseg.cli.options import Formatter, add_model, add_spacing, parse_spacing, volume_spacing
from lumbarseg.engines.registry import DEVICE_HELP, RUNTIMES
from lumbarseg.errors import LumbarsegError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="Dice, IoU, HD95, ASSD per case and class, with a report",
        description="Either --pred P --gt G (files, or folders matched by case name) or --dataset DS.yml --split S.",
        formatter_class=Formatter,
    )
    parser.add_argument("--pred", type=Path, help="predicted mask file or folder")
    parser.add_argument("--gt", type=Path, help="ground-truth mask file or folder")
    parser.add_argument("--label-map", default=None,
                        help="ground truth's raw values -> classes: built-in name or YAML "
                             "(default: spider-png or class indices 0-3, whichever fits)")
    parser.add_argument("--pred-label-map", default=None,
                        help="label map of the predictions (default: --model's label values, else class indices "
                             "as lumbarseg predict writes them, else --label-map)")
    parser.add_argument("--images", type=Path, default=None, help="images matched by case name, for the overlays")
    add_spacing(parser, "voxel size in mm for PNG slice stacks (default 1 mm each)")
    parser.add_argument("--dataset", type=Path, help="DeepHealth dataset YAML: predict and score a split")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    add_model(parser, "; with --pred: its label values read the predictions")
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("-o", "--output", required=True, type=Path, help="report folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    add_limit_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.evaluation.evaluate import evaluate_dataset, evaluate_folders

    if args.dataset is not None:
        if args.pred is not None or args.gt is not None:
            raise LumbarsegError("evaluate", "give either --dataset or --pred/--gt, not both")
        summary = evaluate_dataset(args.dataset, args.split, args.output, args.model, args.runtime, args.device,
                                   overwrite=args.overwrite)
    elif args.pred is not None and args.gt is not None:
        summary = evaluate_folders(args.pred, args.gt, args.output, args.label_map, args.pred_label_map, args.images,
                                   volume_spacing(parse_spacing(args.spacing), slice_default=1.0),
                                   overwrite=args.overwrite, model=args.model)
    else:
        raise LumbarsegError("evaluate", "give --pred and --gt, or --dataset")
    short = {name: {m: stats[m]["mean"] for m in ("dice", "hd95")} for name, stats in summary.items()}
    print(json.dumps(short, indent=1), file=sys.stdout)
    print(f"report -> {args.output / 'report.md'}", file=sys.stderr)
    return 0

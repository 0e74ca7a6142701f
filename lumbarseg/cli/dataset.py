"""`lumbarseg dataset from-slices | from-volumes | context | check`: thin adapters over lumbarseg.data."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Tuple

from lumbarseg.cli.limits import add_limit_options
from lumbarseg.cli.options import SPACING_METAVAR, parse_spacing
from lumbarseg.data.patterns import DEFAULT_SLICE_PATTERN, DEFAULT_VOLUME_PATTERN, SPIDER_SPACING
from lumbarseg.data.split import SPLITS

SPLIT_HELP = "training,validation,test fractions of the patients (default 0.8,0.1,0.1)"
MAX_PROBLEM_LINES = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="build and check DeepHealth Dataset YAMLs",
                                   description="Build DeepHealth Dataset YAMLs (as pyecvl's DLDataset reads them) "
                                               "from slices or volumes, and check them.")
    commands = parser.add_subparsers(dest="dataset_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: _no_command(parser))

    slices = commands.add_parser("from-slices", help="build from folders of image and mask slices (PNG)",
                                 description="Pair image and mask slices by file name, take the patient id (and "
                                             "slice number) from the name, normalise each patient's slices "
                                             "together, convert masks to class indices, split by patient.")
    slices.add_argument("images", help="folder of image slices (8/16-bit PNG, grey or RGB(A) with R=G=B)")
    slices.add_argument("masks", help="folder of mask slices with the same file names")
    slices.add_argument("--pattern", default=DEFAULT_SLICE_PATTERN,
                        help="regex on the file name with groups (?P<patient>...) and optional (?P<slice>...) "
                             "(default: SPIDER names, %(default)s)")
    slices.add_argument("--spacing", metavar=SPACING_METAVAR,
                        help="pixel spacing in mm, recorded in the dataset (default unknown; SPIDER: "
                             f"{','.join(map(str, SPIDER_SPACING))})")
    _add_common(slices)
    slices.set_defaults(func=_from_slices)

    volumes = commands.add_parser("from-volumes", help="build from image and label volumes (NIfTI, MetaImage, DICOM)",
                                  description="Pair image and label volumes by name, reorient to RIP, cut into "
                                              "sagittal slices, record spacing and original geometry.")
    volumes.add_argument("images", help="folder of image volumes (.nii, .nii.gz, .mha, .mhd, DICOM series folders)")
    volumes.add_argument("labels", help="folder of label volumes with the same names")
    volumes.add_argument("--pattern", default=DEFAULT_VOLUME_PATTERN,
                         help="regex on the volume name with a group (?P<patient>...) (default: the whole name)")
    _add_common(volumes)
    volumes.set_defaults(func=_from_volumes)

    context = commands.add_parser("context", help="make a 2.5D dataset: neighbouring slices as channels",
                                  description="Write a dataset whose samples' channels are the slices at the "
                                              "given offsets from their own slice, same patient (edges repeat "
                                              "the edge slice); masks, values and split are kept. The slice "
                                              "files are shared, not copied: write it beside the input.")
    context.add_argument("dataset", help="single-channel DeepHealth Dataset YAML written by lumbarseg dataset")
    context.add_argument("--slices", required=True, metavar="OFFSETS",
                         help="comma-separated slice offsets, one per channel, holding 0 (write --slices=-2,0,2)")
    context.add_argument("-o", "--output", required=True, metavar="OUT.yml", help="dataset YAML to write")
    context.add_argument("--overwrite", action="store_true", help="replace an existing output")
    context.set_defaults(func=_context)

    check = commands.add_parser("check", help="validate a dataset YAML and print a summary",
                                description="Check that files exist and decode, image and mask sizes match, mask "
                                            "values are class indices, splits are non-empty and disjoint and no "
                                            "patient is in two splits. Exit 0 if fine, 2 otherwise.")
    check.add_argument("dataset", help="DeepHealth Dataset YAML")
    check.add_argument("--strict", action="store_true",
                       help="also reject locations outside the dataset's folder (absolute or '..')")
    check.set_defaults(func=_check)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_limit_options(parser)
    parser.add_argument("--label-map", required=True,
                        help="built-in name (spider-png, spider) or YAML file: class -> raw values/ranges")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.yml",
                        help="dataset YAML to write; slices go to the folder OUT/ beside it")
    parser.add_argument("--split", default="0.8,0.1,0.1", help=SPLIT_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient shuffle (default 0)")
    for name in SPLITS:
        parser.add_argument(f"--{name}-patients", metavar="ID,ID",
                            help=f"patients that go to the {name} split (the rest are split by fractions)")
    parser.add_argument("--name", help="dataset name (default: the output file's stem)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _no_command(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _split_spec(args: argparse.Namespace):
    from lumbarseg.data.split import SplitSpec, parse_fractions, parse_patient_list

    fixed: Dict[str, Tuple[str, ...]] = {}
    for name in SPLITS:
        value = getattr(args, f"{name}_patients")
        if value:
            fixed[name] = parse_patient_list(value)
    return SplitSpec(parse_fractions(args.split), args.seed, fixed)


def _report_built(dataset) -> int:
    counts = ", ".join(f"{name} {len(idx)}" for name, idx in dataset.split.items())
    patients = len({dataset.patient(i) for i in range(len(dataset.samples))})
    print(f"wrote {dataset.source}: {len(dataset.samples)} slices of {patients} patient(s); images per split: {counts}")
    return 0


def _from_slices(args: argparse.Namespace) -> int:
    from lumbarseg.data.builders import from_slices
    from lumbarseg.labels import LabelMap

    label_map = LabelMap.load(args.label_map)
    parsed = parse_spacing([args.spacing] if args.spacing else None)
    spacing = [v for v in parsed if v is not None] if parsed else None  # row, col[, slice]
    dataset = from_slices(args.images, args.masks, args.output, label_map, pattern=args.pattern,
                          split=_split_spec(args), spacing=spacing, name=args.name, overwrite=args.overwrite)
    if spacing is None:  # PNG slices carry no geometry: say now what train would only say later
        print(f"lumbarseg: warning: {args.output}: pixel spacing unknown (no --spacing ROW,COL[,SLICE]); "
              f"train will need --spacing ROW,COL (SPIDER: {','.join(map(str, SPIDER_SPACING[:2]))})", file=sys.stderr)
    return _report_built(dataset)


def _from_volumes(args: argparse.Namespace) -> int:
    from lumbarseg.data.builders import from_volumes
    from lumbarseg.labels import LabelMap

    label_map = LabelMap.load(args.label_map)
    dataset = from_volumes(args.images, args.labels, args.output, label_map, pattern=args.pattern,
                           split=_split_spec(args), name=args.name, overwrite=args.overwrite)
    return _report_built(dataset)


def _context(args: argparse.Namespace) -> int:
    from lumbarseg.data.context import parse_offsets, write_with_slice_channels

    dataset = write_with_slice_channels(args.dataset, args.output, parse_offsets(args.slices), args.overwrite)
    return _report_built(dataset)


def _check(args: argparse.Namespace) -> int:
    from lumbarseg.data.check import check_file

    report = check_file(args.dataset, strict=args.strict)
    print(report.summary())
    for warning in report.warnings:
        print(f"lumbarseg: warning: {warning}", file=sys.stderr)
    for problem in report.problems[:MAX_PROBLEM_LINES]:
        print(f"lumbarseg: error: {problem}", file=sys.stderr)
    if len(report.problems) > MAX_PROBLEM_LINES:
        print(f"lumbarseg: error: ... {len(report.problems) - MAX_PROBLEM_LINES} more problems", file=sys.stderr)
    if report.problems:
        print(f"check: {len(report.problems)} problem(s) in {args.dataset}")
        return 2
    print(f"check: {args.dataset} is OK")
    return 0

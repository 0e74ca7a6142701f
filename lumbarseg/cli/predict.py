"""`lumbarseg predict`: segment one volume or a folder of cases with a lumbarseg ONNX model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from lumbarseg.errors import LumbarsegError

RUNTIME_CHOICES = ("onnxruntime", "torch", "eddl")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment a volume (NIfTI, MetaImage, DICOM series, PNG slices) or a folder of cases",
        description="Label vertebrae, discs and spinal canal. The mask keeps the input's grid and geometry.",
    )
    parser.add_argument("-i", "--input", required=True, type=Path,
                        help="a volume file, a DICOM series or PNG slice folder, or a folder of cases")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="mask file (.nii.gz/.nii/.mha, one case only) or output folder")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: models/lumbarseg-spine-t2.onnx)")
    parser.add_argument("--runtime", choices=RUNTIME_CHOICES, default="onnxruntime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or fpga (fpga: --runtime eddl)")
    parser.add_argument("--tta", nargs="?", const="ap", default=None, metavar="AXES",
                        help="test-time augmentation by flips: 'ap' (default when given), 'si' or 'ap,si'")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities (4D NIfTI)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep the raw argmax (no component filtering or hole filling)")
    parser.add_argument("--overlay", action="store_true", help="also write a PNG mosaic of slices with the labels")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SLICE", "ROW", "COL"),
                        help="voxel size in mm for PNG slice input (default: the model's in-plane spacing)")
    parser.add_argument("--batch-size", type=int, default=2, help="slices per inference batch (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


def _plan(cases: List[Any], output: Path) -> Tuple[List[Tuple[Any, Path, Path]], Path]:
    """For each case: (case, mask path, extras stem); and the measurements stem."""
    from lumbarseg.inference.cases import case_name
    from lumbarseg.inference.outputs import MASK_SUFFIXES, mask_suffix

    if output.name.lower().endswith(MASK_SUFFIXES):
        if len(cases) != 1:
            raise LumbarsegError(output, f"input holds {len(cases)} cases: give an output folder, not a file")
        stem = output.with_name(case_name(output))
        return [(cases[0], output, stem)], stem.with_name(stem.name + "_measurements")
    plan = [(c, output / (c.name + mask_suffix(c.format, c.path)), output / c.name) for c in cases]
    return plan, output / "measurements"


def _check_outputs(args: argparse.Namespace, cases: List[Any], plan: List[Tuple[Any, Path, Path]],
                   measurements: Path) -> None:
    """Before any inference: outputs never touch an input, and exist only with --overwrite."""
    from lumbarseg.inference.outputs import case_outputs, measurement_paths
    from lumbarseg.inference.predict import default_model_path
    from lumbarseg.io.atomic import exists_error
    from lumbarseg.io.paths import check_not_input

    model = args.model if args.model is not None else default_model_path()
    inputs = [("", args.input), ("--model", model)] + [("", case.path) for case in cases]
    check_not_input(args.output, inputs)
    outputs: List[Path] = []
    for _, mask_path, stem in plan:
        outputs.extend(case_outputs(mask_path, stem, args.probabilities, args.overlay).values())
    outputs.extend(measurement_paths(measurements))
    for path in outputs:
        check_not_input(path, inputs)
        if path.exists() and not args.overwrite:
            raise exists_error(path)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lumbarseg.inference.cases import find_cases
    from lumbarseg.inference.outputs import case_outputs, measure, write_case, write_measurements
    from lumbarseg.inference.predict import Predictor
    from lumbarseg.io.atomic import all_or_nothing

    cases = find_cases(args.input)
    plan, measurements_stem = _plan(cases, args.output)
    _check_outputs(args, cases, plan, measurements_stem)
    tta = args.tta.split(",") if args.tta else False
    predictor = Predictor(args.model, args.runtime, args.device, tta, not args.no_postprocess, args.batch_size,
                          args.threads)
    rows: List[Dict[str, Any]] = []
    failed: List[str] = []
    single = len(plan) == 1
    info = {"model": str(predictor.model_path), "runtime": args.runtime}
    for case, mask_path, stem in tqdm(plan, desc="cases", unit="case", disable=single or None, file=sys.stderr):
        try:
            volume = predictor.read(case, args.spacing)
            with tqdm(total=volume.shape[0], desc=case.name, unit="slice", disable=not single or None,
                      file=sys.stderr, leave=False) as bar:
                prediction = predictor(volume, probabilities=args.probabilities, progress=bar)
            case_rows = measure(prediction, case.name)
            with all_or_nothing(args.overwrite) as staging:  # mask, extras (and one case's measurements) together
                write_case(prediction, case_outputs(mask_path, stem, args.probabilities, args.overlay), staging,
                           title=case.name)
                if single:
                    write_measurements(case_rows, measurements_stem, info, staging)
            rows.extend(case_rows)
        except (LumbarsegError, MemoryError, RuntimeError, ValueError, OSError) as exc:  # one bad case: go on
            error = exc if isinstance(exc, LumbarsegError) else LumbarsegError(
                case.source, f"{type(exc).__name__}: {exc}")
            if single:
                raise error from None
            failed.append(case.name)
            tqdm.write(f"lumbarseg: error: {error}", file=sys.stderr)
    if rows and not single:
        with all_or_nothing(args.overwrite) as staging:
            write_measurements(rows, measurements_stem, info, staging)
    done = len(plan) - len(failed)
    print(f"{done} of {len(plan)} case(s) segmented -> {args.output}", file=sys.stderr)
    if failed:
        print(f"lumbarseg: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


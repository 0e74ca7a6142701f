"""`lumbarseg predict`: segment one volume or a folder of cases with a lumbarseg ONNX model."""
from __future__ import annotations

import argparse
import sys

from lumbarseg.cli.limits import add_limit_options
from lumbarseg.cli.options import Formatter, add_dicom_options, add_model, add_spacing, parse_spacing, volume_spacing
from lumbarseg.engines.registry import RUNTIMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment a volume (NIfTI, MetaImage, DICOM series, PNG slices) or a folder of cases",
        description="Label vertebrae, discs and spinal canal. The mask keeps the input's grid and geometry.",
        formatter_class=Formatter,
    )
    parser.add_argument("-i", "--input", required=True,
                        help="a volume file, a DICOM study (folder, DICOMDIR) or PNG slice folder, a folder of cases, "
                             "or a DICOMweb study/series URL (http(s)://HOST/dicom-web/studies/UID[/series/UID])")
    parser.add_argument("-o", "--output", required=True,
                        help="mask file (.nii.gz/.nii/.mha; .dcm with --output-type dicom; one case only), output "
                             "folder, or a DICOMweb root (http(s)://HOST/dicom-web: STOW-RS into the input's study)")
    parser.add_argument("--output-type", choices=("nifti", "dicom"), default="nifti",
                        help="nifti: the mask in the input's format (default); dicom: DICOM SEG + SR (TID 1500) + "
                             "Secondary Captures of --overlay/--measure figures (needs the 'dicom' extra)")
    add_dicom_options(parser)
    add_model(parser)
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or fpga (fpga: --runtime eddl)")
    parser.add_argument("--tta", nargs="?", const="ap", default=None, metavar="AXES",
                        help="test-time augmentation by flips: 'ap' (default when given), 'si' or 'ap,si'")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities (4D NIfTI)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep the raw argmax (no component filtering or hole filling)")
    parser.add_argument("--overlay", action="store_true", help="also write a PNG mosaic of slices with the labels")
    parser.add_argument("--measure", action="store_true",
                        help="also name the levels and measure them, as `lumbarseg measure` (<case>_spine.*)")
    add_spacing(parser, "voxel size in mm for inputs without one: PNG slices (default: the model's in-plane "
                        "spacing; SLICE: the model's training slice spacing, else 1 mm) and NIfTI files whose voxel "
                        "sizes are zero, negative or NaN (refused without)")
    parser.add_argument("--batch-size", type=int, default=2, help="slices per inference batch (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_limit_options(parser)
    parser.set_defaults(func=run)


def _report(error: Exception) -> None:
    """One error line; through tqdm when a progress bar is up (it was imported only then), so the bar stays whole."""
    line = f"lumbarseg: error: {error}"
    bars = sys.modules.get("tqdm")
    if bars is not None:
        bars.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _note(line: str) -> None:
    print(f"lumbarseg: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.inference.batch import predict_folder

    result = predict_folder(
        args.input, args.output, args.model, args.runtime, args.device,
        tta=args.tta.split(",") if args.tta else False, postprocess=not args.no_postprocess,
        batch_size=args.batch_size, threads=args.threads, spacing=volume_spacing(parse_spacing(args.spacing)),
        probabilities=args.probabilities, overlay=args.overlay, measure_spine=args.measure, overwrite=args.overwrite,
        progress=True, on_error=_report, output_type=args.output_type, series=args.series,
        dicomweb_token=args.dicomweb_token, on_note=_note)
    print(f"{result.done} of {result.total} case(s) segmented -> {result.output}", file=sys.stderr)
    if result.failed:
        print(f"lumbarseg: {len(result.failed)} case(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0

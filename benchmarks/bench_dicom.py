"""`predict --output-type dicom` against `predict` (NIfTI), CLI end to end, on a 20-slice DICOM study (2 cores).

The study is made like the tests' (tests/dicom_synth.py): a localizer, a sagittal T2 of 20 slices (the shipped
sample's 8 slices of 640 x 512 repeated) and an axial T2. The two commands run in turn (A B A B ...), so drift of
the machine's load affects both; the figures are medians and the ratio of the medians. Target: DICOM outputs add
at most 30 % (issue 20). With Debian's Orthanc installed it also times the PACS round trip: predict from a
DICOMweb study URL with the outputs stored back (STOW-RS) into the study.

    python benchmarks/bench_dicom.py [--runs 5] [--model accurate] [--measure]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def timed(command: List[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="accurate")
    parser.add_argument("--measure", action="store_true", help="both commands with --measure --overlay")
    args = parser.parse_args()
    from dicom_synth import default_series, write_study

    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        study = Path(tmp) / "study"
        write_study(study, default_series(slices=20))
        extra = ["--measure", "--overlay"] if args.measure else []
        base = [sys.executable, "-m", "lumbarseg", "predict", "-i", str(study), "--model", args.model, "--overwrite",
                *extra]
        nifti = base + ["-o", str(Path(tmp) / "nifti")]
        dicom = base + ["-o", str(Path(tmp) / "dicom"), "--output-type", "dicom"]
        timed(nifti), timed(dicom)  # warm-up: file cache, bytecode
        times = {"nifti": [], "dicom": []}
        for _ in range(args.runs):
            times["nifti"].append(timed(nifti))
            times["dicom"].append(timed(dicom))
        medians = {k: statistics.median(v) for k, v in times.items()}
        ratio = medians["dicom"] / medians["nifti"]
        print(f"20-slice study, model {args.model}{' --measure --overlay' if extra else ''}, median of {args.runs}: "
              f"predict {medians['nifti']:.2f} s, --output-type dicom {medians['dicom']:.2f} s -> x{ratio:.2f} "
              f"(+{100 * (ratio - 1):.0f} %, target <= +30 %)")
        from orthanc import missing, start_orthanc

        if missing():
            print(f"Orthanc round trip: skipped ({missing()})")
            return 0
        import pydicom
        from dicomweb_client.api import DICOMwebClient

        server = start_orthanc(Path(tmp) / "orthanc")
        try:
            files = sorted(p for p in study.iterdir())
            DICOMwebClient(server.root).store_instances([pydicom.dcmread(str(p)) for p in files])
            uid = str(pydicom.dcmread(str(files[0])).StudyInstanceUID)
            url = [sys.executable, "-m", "lumbarseg", "predict", "-i", f"{server.root}/studies/{uid}", "-o",
                   server.root, "--model", args.model, *extra]
            seconds = statistics.median(timed(url) for _ in range(args.runs))
            print(f"Orthanc round trip (WADO-RS in, STOW-RS out), median of {args.runs}: {seconds:.2f} s")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

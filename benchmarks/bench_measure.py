"""`lumbarseg measure` and `predict --measure` on a 20-slice 512x640 sagittal volume, 2 CPU cores.

Reports: the analysis alone in process (levels, instances, measurements; best of 5; target well
under 1 s), `lumbarseg measure` end to end from the CLI (with the JSON/CSV/levels/label tables and
the figure), and `lumbarseg predict` with and without `--measure` (best of 3 each; target: less
than 30 % added). The mask measured is the shipped model's prediction on the first 20 slices of
one shared SPIDER patient (a synthetic volume when ../shared is absent: see bench_predict.py).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_predict import THREADS, make_model, make_volume, run_cli  # noqa: E402


def analysis_seconds(mask: Path) -> Dict[str, float]:
    """Best of 5 wall and CPU seconds of measure_mask on an already read mask."""
    from lumbarseg.analysis import measure_mask
    from lumbarseg.io.readers import read_volume

    volume = read_volume(mask)
    measure_mask(volume, "lumbarseg")  # warm-up: imports, caches
    walls, cpus = [], []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        report = measure_mask(volume, "lumbarseg")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": min(walls), "cpu_s": min(cpus), "levels": len(report.levels), "shape": volume.shape}


def main() -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = make_volume(tmp_path / "case.nii.gz")
        model = make_model(tmp_path / "model.onnx")
        base = ["predict", "-i", str(tmp_path / "case.nii.gz"), "--model", str(model), "--threads", str(THREADS)]
        run_cli([*base, "-o", str(tmp_path / "mask.nii.gz")])  # the mask to measure; warms the page cache
        analysis = analysis_seconds(tmp_path / "mask.nii.gz")
        print(f"input: {source}, {analysis['shape']}; {analysis['levels']} levels found")
        print(f"analysis in process (best of 5): {analysis['wall_s']:.2f} s wall, {analysis['cpu_s']:.2f} s CPU "
              "(target well under 1 s)")
        cli = min((run_cli(["measure", "-i", str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / f"m{i}")])
                   for i in range(3)), key=lambda r: r["wall_s"])
        print(f"lumbarseg measure, CLI end to end with figure (best of 3): {cli['wall_s']:.2f} s, "
              f"peak RSS {cli['peak_rss_mb']:.0f} MB")
        plain = [run_cli([*base, "-o", str(tmp_path / f"p{i}" / "mask.nii.gz")]) for i in range(3)]
        measured = [run_cli([*base, "--measure", "-o", str(tmp_path / f"q{i}" / "mask.nii.gz")]) for i in range(3)]
        p, q = min(r["wall_s"] for r in plain), min(r["wall_s"] for r in measured)
        print(f"predict: {p:.2f} s; predict --measure: {q:.2f} s -> +{100 * (q - p) / p:.0f} % (target < 30 %)")
        return {"analysis_s": analysis["wall_s"], "measure_cli_s": cli["wall_s"], "predict_s": p,
                "predict_measure_s": q}


if __name__ == "__main__":
    main()

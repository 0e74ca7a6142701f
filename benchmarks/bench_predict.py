"""`lumbarseg predict` end to end from the CLI on a 20-slice 512x640 sagittal volume, 2 CPU cores.

For each model (``--model NAME|PATH``, repeatable; default: every shipped model) it reports the
CLI's wall time (median and min of 5 runs; target < 1 s for a fast model), peak RSS (target
< 1.5 GB), the network alone (onnxruntime, 20 slices), its FLOPs per slice (counted from the ONNX
graph's Conv shapes) and the fraction of this machine's measured float32 GEMM FLOP/s on 2 threads
it reaches, a batch of 9 such volumes in one ``lumbarseg predict -i FOLDER`` call (seconds per
volume, target <= 0.6 s: start-up paid once, reads and writes overlapped with the network), and
the EDDL runtime's time on the same ONNX as a ratio when pyeddl is installed.

Models: shipped names (``accurate``, ``fast``) or files; default every shipped model, or a
freshly initialised U-Net (depth 4, 16 base filters) when none is shipped. Input: the first 20
slices of one shared SPIDER patient if ../shared is there, else a synthetic volume. The figures are
only as clean as the machine is idle.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPIDER = REPO.parent / "shared" / "data" / "spider-t2space-png" / "images"
THREADS = 2
SLICES, ROWS, COLS = 20, 640, 512
SPACING = (0.9, 0.47, 0.47)  # slice, row, col (mm)
RUNS = 5
BATCH_CASES = 9
sys.path.insert(0, str(REPO))


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(THREADS)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # An installed package has its bytecode compiled (pip does it); without this, a shell that sets
    # PYTHONDONTWRITEBYTECODE would make every run recompile lumbarseg's sources (2 % of the fast model's CLI time).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def make_volume(path: Path) -> str:
    from lumbarseg.io.readers import png_stacks, read_png_stack, write_volume
    from lumbarseg.io.volume import Volume, affine_from_spacing

    if SPIDER.is_dir():
        files = next(iter(png_stacks(SPIDER).values()))[:SLICES]
        volume = read_png_stack(files, spacing=SPACING)
        if volume.shape == (SLICES, ROWS, COLS):
            write_volume(volume, path)
            return f"SPIDER slices {files[0].name} ..."
    rng = np.random.RandomState(0)
    data = (rng.rand(SLICES, ROWS, COLS) * 200).astype(np.int16)
    data[:, 100:540, 200:300] += 600
    write_volume(Volume(data, affine_from_spacing(SPACING, "RIP")), path)
    return "synthetic"


def shipped_models(names: Optional[List[str]]) -> List[Path]:
    """The files of ``names`` (shipped names or paths); without names, every shipped model that is installed."""
    from lumbarseg.model.registry import MODELS, resolve_model, shipped_file

    if names:
        return [resolve_model(name) for name in names]
    return [path for path in (shipped_file(entry.file) for entry in MODELS.values()) if path is not None]


def make_model(path: Path) -> Path:
    from lumbarseg.inference.predict import default_model_path

    try:
        return default_model_path()
    except Exception:  # not shipped yet: a freshly initialised default-config network
        pass
    from lumbarseg.engines.base import get_engine
    from lumbarseg.labels import DEFAULT_COLORS
    from lumbarseg.model.metadata import ModelMetadata, embed
    from lumbarseg.networks.unet import UNetSpec

    spec = UNetSpec(depth=4, base_filters=16)
    get_engine("torch")(spec).export_onnx(path)
    classes = ["background", "vertebra", "disc", "canal"]
    embed(path, ModelMetadata(classes=classes, colors=[list(DEFAULT_COLORS[c]) for c in classes],
                              architecture=spec.to_dict(), spacing=list(SPACING[1:]), input_size=[256, 256],
                              label_values=[0, 76, 29, 150], engine="torch"))
    return path


def network_size(model_path: Path) -> Tuple[int, int]:
    """(rows, cols) the network runs on: the input's slices resampled to the model's spacing, padded."""
    from lumbarseg.model import metadata

    meta = metadata.read(model_path)
    divisor = meta.spec.divisor
    sizes = [round(n * mm / target) for n, mm, target in zip((ROWS, COLS), SPACING[1:], meta.spacing)]
    return sizes[0] + (-sizes[0]) % divisor, sizes[1] + (-sizes[1]) % divisor


def network_seconds(model_path: Path, rows: int, cols: int) -> float:
    """Best of 3: seconds onnxruntime needs for SLICES slices in batches of 2 (as the CLI), THREADS threads."""
    import onnxruntime as ort

    from lumbarseg.model import metadata

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    channels = metadata.read(model_path).spec.in_channels
    batch = np.random.default_rng(0).random((2, channels, rows, cols), dtype=np.float32)
    session.run(None, {"image": batch})
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(SLICES // 2):
            session.run(None, {"image": batch})
        times.append(time.perf_counter() - start)
    return min(times)


def conv_flops(model_path: Path, rows: int = ROWS, cols: int = COLS) -> float:
    """Multiply-adds x 2 of every Conv for one (1, C, rows, cols) slice, from shape inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, dims[1].dim_value or 1, rows, cols)):
        dim.Clear()
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes:
            cout, cin_per_group, kh, kw = weights[node.input[1]]
            _, _, h, w = shapes[node.output[0]]
            total += 2.0 * cout * h * w * cin_per_group * kh * kw
    return total


def gemm_flops() -> float:
    """float32 matmul FLOP/s with 2 BLAS threads (best of 5, n = 2048), in a fresh process."""
    code = ("import numpy as np, time\nn=2048\na=np.random.rand(n,n).astype(np.float32)\nb=a.copy()\na@b\n"
            "best=min((lambda t: (a@b, time.perf_counter()-t)[1])(time.perf_counter()) for _ in range(5))\n"
            "print(2*n**3/best)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def run_cli(args: List[str]) -> Dict[str, float]:
    """Wall time and peak RSS of one `lumbarseg predict` process."""
    start = time.perf_counter()
    code = ("import resource, sys\nfrom lumbarseg.cli import main\nrc = main(sys.argv[1:])\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *args], env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    rss_kb = float(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS")))
    return {"wall_s": wall, "peak_rss_mb": rss_kb / 1024}


def bench_model(model: Path, tmp_path: Path, volume: Path, gemm: float) -> Dict[str, float]:
    """The figures of one model (printed), as a dict."""
    rows, cols = network_size(model)
    flops = conv_flops(model, rows, cols)
    base = ["predict", "-i", str(volume), "--model", str(model), "--threads", str(THREADS)]
    run_cli([*base, "-o", str(tmp_path / "warm.nii.gz")])  # page cache, import caches
    runs = [run_cli([*base, "-o", str(tmp_path / f"run{i}.nii.gz")]) for i in range(RUNS)]
    walls = [r["wall_s"] for r in runs]
    median = statistics.median(walls)
    peak = max(r["peak_rss_mb"] for r in runs)
    slices_flops = flops * SLICES
    network = network_seconds(model, rows, cols)
    print(f"model: {model.name}; network input {rows}x{cols}")
    print(f"  predict wall time (CLI, end to end, {RUNS} runs): median {median:.2f} s, min {min(walls):.2f} s   "
          f"(target < 1 s for a fast model)")
    print(f"  peak RSS: {peak:.0f} MB   (target < 1536 MB)")
    print(f"  network: {flops / 1e9:.2f} GFLOP per slice, {slices_flops / 1e9:.1f} GFLOP per volume; "
          f"onnxruntime alone (batches of 2): {network:.2f} s for {SLICES} slices = "
          f"{slices_flops / network / 1e9:.1f} GFLOP/s = {100 * slices_flops / network / gemm:.0f}% of GEMM peak")
    print(f"  everything but the network (start-up, imports, I/O, resampling, post-processing): "
          f"{median - network:.2f} s")
    cases = tmp_path / "cases"
    cases.mkdir(exist_ok=True)
    for i in range(BATCH_CASES):
        shutil.copy(volume, cases / f"case{i}.nii.gz")
    batch_runs = [run_cli(["predict", "-i", str(cases), "--model", str(model), "--threads", str(THREADS),
                           "-o", str(tmp_path / f"batch{i}")]) for i in range(2)]
    batch = min(r["wall_s"] for r in batch_runs)
    print(f"  batch of {BATCH_CASES} volumes (one call, best of 2): {batch:.2f} s = {batch / BATCH_CASES:.2f} s per "
          f"volume   (target <= 0.6 s), peak RSS {max(r['peak_rss_mb'] for r in batch_runs):.0f} MB")
    result = {"wall_s": median, "wall_min_s": min(walls), "peak_rss_mb": peak, "network_s": network,
              "gflop_per_slice": flops / 1e9, "gemm_fraction": slices_flops / network / gemm,
              "batch_s_per_volume": batch / BATCH_CASES}
    try:
        import pyeddl  # noqa: F401
    except ImportError:
        print("  EDDL runtime: pyeddl not installed (ratio not measured)")
    else:
        try:
            eddl = run_cli([*base, "--runtime", "eddl", "-o", str(tmp_path / "eddl.nii.gz")])
            print(f"  EDDL-CPU runtime: {eddl['wall_s']:.2f} s = {eddl['wall_s'] / median:.1f}x onnxruntime, "
                  f"peak RSS {eddl['peak_rss_mb']:.0f} MB")
            result["eddl_ratio"] = eddl["wall_s"] / median
        except RuntimeError as exc:
            print(f"  EDDL runtime failed: {exc}")
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help="shipped model name or ONNX file to measure (repeatable; default: every shipped model)")
    names = parser.parse_args(argv).model
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = make_volume(tmp_path / "case.nii.gz")
        gemm = gemm_flops()
        print(f"input: {source}, {SLICES} x {ROWS} x {COLS}; {THREADS} threads; "
              f"GEMM float32: {gemm / 1e9:.1f} GFLOP/s")
        for model in shipped_models(names) or [make_model(tmp_path / "model.onnx")]:
            work = tmp_path / model.stem
            work.mkdir()
            results[str(model)] = bench_model(model, work, tmp_path / "case.nii.gz", gemm)
    return results


if __name__ == "__main__":
    main()

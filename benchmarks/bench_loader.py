"""Loader throughput (augmented 256x256 slices per second) and memory as the dataset grows.

Runs on synthetic 8-bit PNG slices written to a temporary folder. Throughput uses a realistic training
spec (resize + rotate + mirror + elastic + gamma + noise); memory compares the peak RSS of one epoch over
N slices with one over 4N slices, each in a fresh process so the figures do not mix.
Run alone with ``python3 benchmarks/bench_loader.py [--slices N] [--workers W]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumbarseg.data.loader import SliceLoader  # noqa: E402
from lumbarseg.io.slices import write_png  # noqa: E402

TRAINING_SPEC = """SequentialAugmentationContainer
    AugResizeDim dims=(256,256) interp="linear"
    AugRotate angle=[-10,10]
    AugMirror p=0.5
    AugElasticTransform alpha=[20,40] sigma=[4,6]
    AugGammaContrast gamma=[0.7,1.5]
    AugAdditiveLaplaceNoise std_dev=[0,5]
end"""
TARGET_PER_SECOND = 200


def write_dataset(folder: Path, count: int, height: int = 320, width: int = 256) -> Path:
    """``count`` synthetic slices (smooth anatomy-like blobs plus noise) and 4-class masks, as a DeepHealth YAML."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    images = []
    for index in range(count):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        distance = np.hypot((yy - cy) / height, (xx - cx) / width)
        image = np.clip(200 * np.exp(-8 * distance) + rng.normal(0, 8, (height, width)), 0, 255).astype(np.uint8)
        mask = np.digitize(distance, [0.1, 0.2, 0.3])[::-1].astype(np.uint8) % 4
        write_png(folder / "images" / f"{index:05d}.png", image)
        write_png(folder / "masks" / f"{index:05d}.png", mask)
        images.append({"location": f"images/{index:05d}.png", "label": f"masks/{index:05d}.png"})
    data = {"name": "bench", "description": "synthetic", "lumbarseg": {"classes": ["background", "a", "b", "c"]},
            "images": images, "split": {"training": list(range(count))}}
    path = folder / "dataset.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def throughput(path: Path, workers: int, batch_size: int = 16, epochs: int = 2) -> Tuple[float, float]:
    """Augmented slices per wall-clock second, and CPU milliseconds per slice (all threads), over whole epochs."""
    loader = SliceLoader(path, "training", batch_size=batch_size, augmentation=TRAINING_SPEC, workers=workers)
    next(iter(loader))
    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, _ in loader:
            count += images.shape[0]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return count / wall, 1000 * cpu / count


def peak_rss_mb(path: Path, workers: int) -> float:
    """Peak RSS (MB) of a fresh process that runs one augmented epoch over the dataset."""
    code = ("import resource, sys; sys.path.insert(0, sys.argv[3]); from lumbarseg.data.loader import SliceLoader; "
            "from benchmarks.bench_loader import TRAINING_SPEC; "
            "loader = SliceLoader(sys.argv[1], 'training', 16, TRAINING_SPEC, workers=int(sys.argv[2])); "
            "[None for _ in loader]; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, str(path), str(workers), root], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200, help="slices in the small dataset (the large has 4x)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    print(f"cores available: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()[0]:.1f}")
    print(f"spec:\n{TRAINING_SPEC}")
    with tempfile.TemporaryDirectory(prefix="lumbarseg-bench-") as tmp:
        small = write_dataset(Path(tmp) / "small", args.slices)
        large = write_dataset(Path(tmp) / "large", 4 * args.slices)
        for workers in sorted({0, 1, args.workers}):
            rate, cpu_ms = throughput(small, workers)
            verdict = "meets" if rate >= TARGET_PER_SECOND else "BELOW"
            print(f"throughput, workers={workers}: {rate:.0f} augmented 256x256 slices/s "
                  f"({verdict} target {TARGET_PER_SECOND}/s; 320x256 PNG sources); CPU {cpu_ms:.1f} ms/slice "
                  f"= {2000 / cpu_ms:.0f}/s on 2 idle cores")
        spider_size = write_dataset(Path(tmp) / "spider-size", args.slices // 2, height=640, width=512)
        rate, cpu_ms = throughput(spider_size, args.workers)
        print(f"throughput, workers={args.workers}: {rate:.0f} augmented 256x256 slices/s from 640x512 sources "
              f"(SPIDER's slice size; PNG decoding dominates); CPU {cpu_ms:.1f} ms/slice")
        small_mb, large_mb = peak_rss_mb(small, args.workers), peak_rss_mb(large, args.workers)
        print(f"peak RSS, one epoch: {args.slices} slices {small_mb:.0f} MB, "
              f"{4 * args.slices} slices {large_mb:.0f} MB "
              f"(growth {large_mb - small_mb:+.0f} MB for 4x the data)")
    print(f"this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

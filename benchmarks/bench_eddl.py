"""EDDL engine overhead: ``EddlEngine.train_step`` vs a bare ``eddl.train_batch`` on the same net and batch.

Both train the same U-Net (depth 4, 8 base filters, 128x128, batch 8, Adam) on CPU in the same process,
alternating step by step so machine noise hits both alike. The toolkit's step adds the numpy loss
(CE + foreground soft Dice and its gradient), the soft-target hand-over to EDDL and the BatchNorm
gradient fix; the bare step is ``train_batch`` with EDDL's own softmax cross-entropy. Target: <= 5%.

    python3 benchmarks/bench_eddl.py [--steps N] [--size N] [--batch N] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        from pyeddl import eddl
        from pyeddl.tensor import Tensor
    except ImportError:
        print("bench_eddl: pyeddl not installed, skipped")
        return

    from lumbarseg.config import LossConfig, OptimizerConfig
    from lumbarseg.engines.eddl_compute import computing_service, quiet
    from lumbarseg.engines.eddl_engine import EddlEngine
    from lumbarseg.engines.eddl_net import build_unet
    from lumbarseg.networks.unet import UNetSpec

    spec = UNetSpec(depth=4, base_filters=8)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, args.size, args.size), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, (args.batch, args.size, args.size))
    onehot = np.eye(spec.num_classes, dtype=np.float32)[y].transpose(0, 3, 1, 2).copy()

    engine = EddlEngine(spec, threads=args.threads)
    engine.configure_training(OptimizerConfig(name="adam", lr=1e-3), LossConfig())
    bare, _ = build_unet(spec.architecture(), (args.size, args.size))
    with quiet():
        eddl.build(bare, eddl.adam(1e-3), ["softmax_cross_entropy"], ["none"],
                   computing_service(engine.device, args.threads), True)
    tx, ty = Tensor.fromarray(x), Tensor.fromarray(onehot)

    def toolkit() -> None:
        engine.train_step(x, y)

    def plain() -> None:
        eddl.train_batch(bare, [tx], [ty])

    toolkit(), plain()  # warm-up: first-step allocations
    times = {"toolkit": [], "bare": []}  # type: dict
    for _ in range(args.steps):
        for name, step in (("toolkit", toolkit), ("bare", plain)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    toolkit_s, bare_s = statistics.median(times["toolkit"]), statistics.median(times["bare"])
    overhead = 100.0 * (toolkit_s / bare_s - 1.0)
    print(f"EDDL CPU, U-Net depth 4 base 8, batch {args.batch} x 1 x {args.size} x {args.size}, Adam, "
          f"{args.steps} steps each (median):")
    print(f"  bare eddl.train_batch      {bare_s * 1000:8.1f} ms/step")
    print(f"  EddlEngine.train_step      {toolkit_s * 1000:8.1f} ms/step")
    print(f"  overhead                   {overhead:+8.1f} %  (target <= 5 %)"
          + ("" if overhead <= 5.0 else "  ABOVE TARGET"))


if __name__ == "__main__":
    main()

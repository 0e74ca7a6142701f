"""Data-parallel training on one machine: 1 process x 2 threads vs 2 processes x 1 thread (torchrun, gloo), and
the two BatchNorm modes of 2 processes (``distributed.batch_norm: global`` vs ``local``).

Default: one epoch (training and validation; configs/unet_spider.yml) on the SPIDER training split in both set-ups,
as a ratio, then the communication of a 2-process step measured alone: the all-reduce of the U-Net's
gradients (DDP's bucket, all parameters) and the small all-reduces of the global-batch BatchNorm and loss
(4 per BN layer and 2 for the loss per step). Ends with a projection to 4 nodes: ring all-reduce moves
2 (N - 1) / N x the gradient bytes per step, on 10 Gb/s and 100 Gb/s links, against the compute per step.

``--batch-norm E``: 2-process runs of E epochs in each BatchNorm mode, side by side (global, local, global, ...;
``--pairs`` of them): the training step time (median over the runs, and the ratio within each pair, so that the
load of the shared machine drifts out), the communication share of a step, and the validation Dice after the
same epochs. Skipped when the shared SPIDER export is absent.

    python3 benchmarks/bench_distributed.py [--slices N] [--config configs/unet_spider.yml]
    python3 benchmarks/bench_distributed.py --batch-norm 5 --slices 96 [--pairs 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SPIDER = REPO.parent / "shared" / "data" / "spider-t2space-png"
DATASET = REPO / "build" / "spider" / "spider.yml"
NODES = 4
LINKS_GBIT = (10, 100)


def _env(threads: int) -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID"):
        env.pop(name, None)
    return env


def _dataset(limit: int) -> Path:
    """build/spider/spider.yml (made as `make model` makes it), or a copy whose training split is cut to ``limit``
    slices spread evenly over it (every patient keeps some); the validation split stays whole."""
    if not DATASET.is_file():
        subprocess.run([sys.executable, "-m", "lumbarseg", "dataset", "from-slices", str(SPIDER / "images"),
                        str(SPIDER / "masks"), "--label-map", "spider-png", "--spacing", "0.47,0.47,0.9",
                        "--split", "0.8,0.1,0.1", "--seed", "0", "-o", str(DATASET)], check=True, env=_env(2))
    if not limit:
        return DATASET
    from lumbarseg.data.deephealth_yaml import load_dataset, write_dataset

    ds = load_dataset(DATASET)
    training = ds.split["training"]
    ds.split["training"] = [training[i * len(training) // limit] for i in range(min(limit, len(training)))]
    out = DATASET.parent / f"spider-train{limit}.yml"  # beside it: slice paths are relative to the YAML
    write_dataset(ds, out)
    return out


def _epoch(command: List[str], threads: int, out: Path) -> Dict[str, float]:
    started = time.perf_counter()
    subprocess.run(command + ["--threads", str(threads), "--out", str(out)], check=True, env=_env(threads),
                   stdout=subprocess.DEVNULL)
    with open(out / "log.csv", newline="") as handle:
        epoch = float(next(csv.DictReader(handle))["seconds"])
    return {"epoch_s": epoch, "wall_s": time.perf_counter() - started}


def _collectives(numel: int, small: int) -> None:
    """Under torchrun: mean seconds of an all-reduce of ``numel`` float32 and of ``small`` float32 (gloo)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    result = {}
    for name, size, reps in (("gradients", numel, 20), ("small", small, 200)):
        tensor = torch.randn(size)
        dist.all_reduce(tensor)
        dist.barrier()
        started = time.perf_counter()
        for _ in range(reps):
            dist.all_reduce(tensor)
        result[name] = (time.perf_counter() - started) / reps
    if dist.get_rank() == 0:
        print(json.dumps(result))
    dist.destroy_process_group()


def _torchrun() -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(29500 + os.getpid() % 1000)]


def _modes_run(data: Path, config: Path, mode: str, epochs: int, out: Path) -> Dict[str, Any]:
    """A 2-process run of ``epochs`` with ``distributed.batch_norm: mode``: training seconds per epoch, final Dice."""
    variant = out.parent / f"{out.name}.yml"
    variant.write_text(config.read_text() + f"\ndistributed: {{batch_norm: {mode}}}\n")
    subprocess.run(_torchrun() + ["-m", "lumbarseg", "train", "--dataset", str(data), "--config", str(variant),
                                  "--epochs", str(epochs), "--threads", "1", "--no-progress", "--out", str(out)],
                   check=True, env=_env(1), stdout=subprocess.DEVNULL)
    log = json.loads((out / "log.json").read_text())
    (world,) = log["worlds"]
    assert world["batch_norm"] == mode and world["world_size"] == 2, world
    last = log["epochs"][-1]
    return {"train_s": [r["train_seconds"] for r in log["epochs"]], "mean_dice": last["mean_dice"],
            "dice": last["dice"]}


def _bn_compute(config: Any, rounds: int = 5, steps: int = 3) -> Dict[str, Dict[str, float]]:
    """One training step of one rank's part of the batch (1 thread, a training crop) with PyTorch's BatchNorm and
    with GlobalBatchNorm2d whose all-reduces are replaced by nothing: its seconds (the nets take turns; the median of
    the rounds), the cost of computing the statistics in Python apart from any communication; and the operators it
    dispatches (forward, backward, optimiser): what bounds a step on a GPU, each costing PyTorch's eager overhead."""
    import numpy as np
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            self.ops += 1
            return func(*args, **(kwargs or {}))

    from lumbarseg.engines import torch_distributed
    from lumbarseg.engines.torch_engine import TorchEngine

    torch.set_num_threads(1)
    torch_distributed.global_sum = lambda tensor: tensor  # one rank, no process group
    crop = (192, 160)  # configs/unet_spider.yml's AugRandomCrop (rows, cols)
    rng = np.random.default_rng(0)
    images = rng.random((config.batch_size // 2, 1) + crop, dtype=np.float32)
    labels = rng.integers(0, 4, (config.batch_size // 2,) + crop)
    engines = {}
    for mode in ("local", "global"):
        engines[mode] = TorchEngine(config.spec(4), threads=1)
        if mode == "global":
            torch_distributed.global_batch_norm(engines[mode].net)
        engines[mode].configure_training(config.optimizer, config.loss)
        engines[mode].train_step(images, labels)
    times: Dict[str, List[float]] = {mode: [] for mode in engines}
    for _ in range(rounds):
        for mode, engine in engines.items():
            started = time.perf_counter()
            for _ in range(steps):
                engine.train_step(images, labels)
            times[mode].append((time.perf_counter() - started) / steps)
    result = {}
    for mode, engine in engines.items():
        with Count() as counted:
            engine.train_step(images, labels)
        result[mode] = {"seconds": statistics.median(times[mode]), "ops": counted.ops}
    return result


def _compare_batch_norm(args: argparse.Namespace, params: int, bn_layers: int) -> None:
    from lumbarseg.config import load_config
    from lumbarseg.data.deephealth_yaml import load_dataset

    config = load_config(args.config)
    data = _dataset(args.slices)
    n_train = len(load_dataset(data).split["training"])
    steps = max(n_train // config.batch_size, 1)  # a last batch smaller than the world joins the one before
    runs: Dict[str, List[Dict[str, Any]]] = {"global": [], "local": []}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="lumbarseg-bench-bn-") as folder:
        for pair in range(args.pairs):
            for mode in ("global", "local"):
                runs[mode].append(_modes_run(data, args.config, mode, args.batch_norm, Path(folder) / f"{mode}{pair}"))
                load.append(os.getloadavg()[0])
        done = subprocess.run(_torchrun() + [__file__, "--collectives", str(params), str(64)], check=True,
                              env=_env(1), capture_output=True, text=True)
    comm = json.loads(done.stdout.strip().splitlines()[-1])
    compute = _bn_compute(config)
    # steady state: the first epoch (start-up, first allocations) is left out of the step time
    step = {m: statistics.median(s for r in rs for s in r["train_s"][1:]) / steps for m, rs in runs.items()}
    ratios = [statistics.median(g["train_s"][1:]) / statistics.median(lo["train_s"][1:])
              for g, lo in zip(runs["global"], runs["local"])]
    small = {"global": 4 * bn_layers + 2, "local": 2}
    print(f"BatchNorm modes, 2 processes x 1 thread: {n_train} training slices, global batch {config.batch_size}, "
          f"{steps} steps an epoch, {args.batch_norm} epochs, {args.pairs} pair(s) run side by side; load average "
          f"(1 min) during the runs {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores")
    for mode, rs in runs.items():
        comm_s = comm["gradients"] + small[mode] * comm["small"]
        dice = rs[-1]["dice"]
        print(f"  {mode:>6}: training step {step[mode] * 1e3:.0f} ms (median of epochs 2-{args.batch_norm}); "
              f"communication {comm_s * 1e3:.1f} ms = {100 * comm_s / step[mode]:.1f}% of the step (gradients "
              f"{comm['gradients'] * 1e3:.2f} ms + {small[mode]} small all-reduces x {comm['small'] * 1e3:.3f} ms); "
              f"validation mean Dice after {args.batch_norm} epochs {rs[-1]['mean_dice']:.3f} ("
              + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()) + ")"
              + ("" if len({r["mean_dice"] for r in rs}) == 1 else f" (runs differ: {[r['mean_dice'] for r in rs]})"))
    print(f"  step time global / local, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f}); global - local = {(step['global'] - step['local']) * 1e3:.0f} ms "
          f"= {100 * (1 - step['local'] / step['global']):.0f}% of a global step")
    g, lo = compute["global"], compute["local"]
    print(f"  of which computing the statistics in Python (one process, {config.batch_size // 2} crops, all-reduces "
          f"left out): {(g['seconds'] - lo['seconds']) * 1e3:.0f} ms ({g['seconds'] * 1e3:.0f} vs "
          f"{lo['seconds'] * 1e3:.0f} ms a step); the rest is the all-reduces and each rank waiting at them for "
          "the other")
    print(f"  operators dispatched per training step (forward, backward, optimiser): global {g['ops']}, local "
          f"{lo['ops']} (x{g['ops'] / lo['ops']:.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=0, help="cut the training split to N slices (0: all)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "unet_spider.yml")
    parser.add_argument("--batch-norm", type=int, metavar="EPOCHS", help="compare the BatchNorm modes over EPOCHS")
    parser.add_argument("--pairs", type=int, default=2, help="--batch-norm: runs of each mode, side by side")
    parser.add_argument("--collectives", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collectives:
        _collectives(*args.collectives)
        return 0
    if not (SPIDER / "images").is_dir():
        print(f"skipped: the SPIDER export is not at {SPIDER}")
        return 0
    from lumbarseg.config import load_config
    from lumbarseg.engines.torch_engine import UNet
    from lumbarseg.networks.unet import UNetSpec

    config = load_config(args.config)
    spec = UNetSpec(num_classes=4, **{k: v for k, v in config.to_dict()["model"].items()})
    net = UNet(spec)
    params = sum(p.numel() for p in net.parameters())
    bn_layers = sum(1 for m in net.modules() if type(m).__name__ == "BatchNorm2d")
    if args.batch_norm:
        _compare_batch_norm(args, params, bn_layers)
        return 0
    with tempfile.TemporaryDirectory(prefix="lumbarseg-bench-dist-") as folder:
        tmp = Path(folder)
        data = _dataset(args.slices)
        from lumbarseg.data.deephealth_yaml import load_dataset

        n_train = len(load_dataset(data).split["training"])
        steps = -(-n_train // config.batch_size)
        train = ["-m", "lumbarseg", "train", "--dataset", str(data), "--config", str(args.config), "--epochs", "1",
                 "--no-progress"]
        one = _epoch([sys.executable] + train, 2, tmp / "one")
        two = _epoch(_torchrun() + train[1:], 1, tmp / "two")
        done = subprocess.run(_torchrun() + [__file__, "--collectives", str(params), str(64)], check=True,
                              env=_env(1), capture_output=True, text=True)
        comm = json.loads(done.stdout.strip().splitlines()[-1])
    per_step = comm["gradients"] + (4 * bn_layers + 2) * comm["small"]
    compute = one["epoch_s"] / steps
    print(f"training split: {n_train} slices, global batch {config.batch_size}, {steps} steps; U-Net "
          f"{params:,} parameters ({params * 4 / 1e6:.2f} MB float32), {bn_layers} BatchNorm layers")
    print(f"one epoch, 1 process x 2 threads:  {one['epoch_s']:.1f} s (wall {one['wall_s']:.1f} s)")
    print(f"one epoch, 2 processes x 1 thread: {two['epoch_s']:.1f} s (wall {two['wall_s']:.1f} s)")
    print(f"ratio (2x1 / 1x2): {two['epoch_s'] / one['epoch_s']:.2f}")
    print(f"communication per 2-process step (gloo, this machine): gradients {comm['gradients'] * 1e3:.2f} ms + "
          f"{4 * bn_layers + 2} small all-reduces x {comm['small'] * 1e3:.3f} ms = {per_step * 1e3:.1f} ms "
          f"({100 * per_step / (two['epoch_s'] / steps):.1f}% of a 2-process step)")
    volume = 2 * (NODES - 1) / NODES * params * 4
    local = compute / NODES  # the global batch split over NODES ranks (one per node), compute ~ linear in batch
    print(f"projection, {NODES} nodes x 1 rank: ring all-reduce moves {volume / 1e6:.2f} MB per step; compute per "
          f"step ~ {local:.2f} s (this machine's {compute:.2f} s per global step / {NODES}; 1-process epoch "
          f"incl. validation / steps), plus {4 * bn_layers + 2} latency-bound small all-reduces:")
    for gbit in LINKS_GBIT:
        seconds = volume * 8 / (gbit * 1e9)
        print(f"  {gbit:>3} Gb/s: {seconds * 1e3:.2f} ms per step = {100 * seconds / local:.2f}% of the compute")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

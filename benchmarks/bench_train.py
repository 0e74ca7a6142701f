"""Training throughput of the PyTorch engine: lumbarseg's loop vs a bare PyTorch loop, and peak memory.

Both loops train the same U-Net (configs/unet_spider.yml: depth 4, 16 base filters, 320x256, batch 8,
Adam) for the same number of steps in the same process. lumbarseg's loop is ``trainer.train_epoch``:
PNG slices read, augmented (the config's training spec) and prefetched by ``SliceLoader``, the
learning-rate schedule, ``TorchEngine.train_step``. The bare loop feeds one preloaded batch to
``model(x)``, CE + soft Dice, ``backward``, ``step``. Target: lumbarseg >= 0.9x the bare loop.

    python3 benchmarks/bench_train.py [--steps N] [--device cpu|cuda] [--size ROWSxCOLS]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "unet_spider.yml"


def _dataset(folder: Path, rows: int, cols: int, count: int) -> Path:
    """Synthetic slices at twice the input size (like SPIDER's 640x512 -> 320x256) with a DeepHealth YAML."""
    from lumbarseg.data.deephealth_yaml import DeepHealthDataset, Sample, write_dataset
    from lumbarseg.io.slices import write_png

    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        image = rng.integers(0, 255, (2 * rows, 2 * cols)).astype(np.uint8)
        mask = rng.integers(0, 4, (2 * rows, 2 * cols)).astype(np.uint8)
        write_png(folder / "images" / f"{i}.png", image)
        write_png(folder / "masks" / f"{i}.png", mask)
        samples.append(Sample([f"images/{i}.png"], f"masks/{i}.png"))
    split = {"training": list(range(count - 1)), "validation": [count - 1]}
    ds = DeepHealthDataset("bench", "synthetic", folder, samples, split,
                           meta={"classes": ["background", "vertebra", "disc", "canal"], "spacing": [0.47, 0.47]})
    write_dataset(ds, folder / "bench.yml")
    return folder / "bench.yml"


def _bare_loop(spec, batch: int, rows: int, cols: int, steps: int, device: str) -> float:
    """Seconds for ``steps`` plain PyTorch steps on one preloaded batch (same net, loss and optimiser)."""
    import torch

    from lumbarseg.config import LossConfig
    from lumbarseg.engines.torch_engine import UNet, segmentation_loss

    torch.manual_seed(0)
    model = UNet(spec).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, rows, cols, device=device)
    y = torch.randint(0, spec.num_classes, (batch, rows, cols), device=device)
    amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=amp):
            logits = model(x)
        loss = segmentation_loss(logits, y, LossConfig(), None)  # the engine's loss, so only the loop differs
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()  # the toolkit returns the loss as a float each step; sync the same way

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def _toolkit_loop(dataset: Path, config, steps: int, device: str) -> float:
    """Seconds for ``steps`` steps of ``trainer.train_epoch`` (loader + augmentation + engine)."""
    from lumbarseg.data.deephealth_yaml import load_dataset
    from lumbarseg.engines.base import parse_device
    from lumbarseg.engines.torch_engine import TorchEngine
    from lumbarseg.training.sources import SliceLoaderSource
    from lumbarseg.training.trainer import train_epoch

    ds = load_dataset(dataset)
    config = config.with_classes(ds.classes, str(dataset))
    engine = TorchEngine(config.spec(), parse_device(device), threads=config.threads, seed=0)
    engine.configure_training(config.optimizer, config.loss)
    source = SliceLoaderSource(ds, config)
    warm = next(iter(source.batches("training", 99)))
    engine.train_step(*warm)  # warm-up, as for the bare loop
    start = time.perf_counter()
    done = 0
    epoch = 0
    while done < steps:
        losses, _ = train_epoch(engine, source, config, epoch, progress=False)
        done += len(losses)
        epoch += 1
    elapsed = time.perf_counter() - start
    return elapsed * steps / done


def _training_batch_size(dataset: Path, config) -> Tuple[int, int]:
    """(rows, cols) of the toolkit's training batches once the config's augmentation has run."""
    from lumbarseg.data.deephealth_yaml import load_dataset
    from lumbarseg.training.sources import SliceLoaderSource

    ds = load_dataset(dataset)
    images, _ = next(iter(SliceLoaderSource(ds, config.with_classes(ds.classes, str(dataset))).batches("training", 0)))
    return int(images.shape[2]), int(images.shape[3])


def _status_mib(key: str) -> float:
    """A /proc/self/status memory figure (Linux); ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Restart the peak-RSS count (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_step(rows: int, cols: int, batch: int, device: str) -> None:
    """Child process: one training step at the given size; prints peak RSS (and CUDA) in MiB as JSON."""
    import torch

    from lumbarseg.config import load_config
    from lumbarseg.engines.base import parse_device
    from lumbarseg.engines.torch_engine import TorchEngine

    config = load_config(CONFIG)
    engine = TorchEngine(config.spec(4), parse_device(device), seed=0)
    engine.configure_training(config.optimizer, config.loss)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, rows, cols), dtype=np.float32)
    y = rng.integers(0, 4, (batch, rows, cols))
    engine.train_step(x, y)  # the first step allocates the optimiser state
    _reset_peak()
    before = _status_mib("VmRSS")
    engine.train_step(x, y)
    result = {"rss_before_mib": before, "rss_peak_mib": _status_mib("VmHWM")}
    if device.startswith("cuda"):
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default=None, help="ROWSxCOLS (default: the config's input_size)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])

    from lumbarseg.config import load_config

    overrides = {"workers": 2}
    if args.size:
        overrides["input_size"] = [int(v) for v in args.size.lower().split("x")]
    if args.threads:
        overrides["threads"] = args.threads
    config = load_config(CONFIG, overrides)
    rows, cols = config.input_size
    if args.memory_step:
        _peak_memory_step(rows, cols, config.batch_size, args.device)
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"U-Net depth {config.model.depth}, {config.model.base_filters} base filters, batch {config.batch_size} x "
          f"{rows}x{cols}, device {args.device}, {torch.get_num_threads()} torch threads, {args.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _dataset(Path(tmp), rows, cols, count=config.batch_size * args.steps + 1)  # one epoch
        spec = config.with_classes(["background", "vertebra", "disc", "canal"], "bench").spec()
        # The bare loop trains on batches of the size the toolkit's augmentation yields (e.g. random crops).
        crop_rows, crop_cols = _training_batch_size(dataset, config)
        print(f"training batches after augmentation: {config.batch_size} x {crop_rows}x{crop_cols}")
        # Bare, toolkit, bare: half the bare steps either side, so drifting load on a shared machine hits both.
        half = max(args.steps // 2, 1)
        bare = _bare_loop(spec, config.batch_size, crop_rows, crop_cols, half, args.device) / half
        toolkit = _toolkit_loop(dataset, config, args.steps, args.device)
        bare = (bare + _bare_loop(spec, config.batch_size, crop_rows, crop_cols, half, args.device) / half) / 2
        bare *= args.steps
    slices = args.steps * config.batch_size
    print(f"bare PyTorch loop : {slices / bare:8.2f} slices/s ({bare / args.steps:.3f} s/step)")
    print(f"lumbarseg loop    : {slices / toolkit:8.2f} slices/s ({toolkit / args.steps:.3f} s/step)")
    print(f"ratio             : {bare / toolkit:8.3f}x (target >= 0.9x)")
    child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-step", "--device", args.device,
                            "--size", f"{rows}x{cols}"], capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    line = (f"peak memory of a training step at {rows}x{cols}, batch {config.batch_size}: "
            f"{memory['rss_peak_mib']:.0f} MiB peak RSS (process between steps {memory['rss_before_mib']:.0f} MiB)")
    if "cuda_peak_mib" in memory:
        line += f", CUDA {memory['cuda_peak_mib']:.0f} MiB allocated"
    print(line)


if __name__ == "__main__":
    main(sys.argv[1:])

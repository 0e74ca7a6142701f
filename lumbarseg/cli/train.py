"""`lumbarseg train`: a thin adapter over ``lumbarseg.training.trainer.train`` / ``resume``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

from lumbarseg.config import OPTIMIZERS, SCHEDULES
from lumbarseg.engines.registry import DEVICE_HELP, ENGINES
from lumbarseg.errors import LumbarsegError
from lumbarseg.model.registry import MODEL_CHOICES

# CLI flag -> dotted config key (flags override the config file).
OVERRIDES = {"epochs": "epochs", "batch_size": "batch_size", "lr": "optimizer.lr", "optimizer": "optimizer.name",
             "schedule": "schedule.name", "seed": "seed", "workers": "workers", "threads": "threads",
             "depth": "model.depth", "base_filters": "model.base_filters", "patience": "early_stopping.patience"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a U-Net on a DeepHealth dataset (or resume a run)",
        description="Train a U-Net; writes RUN_DIR/{config.yml, log.csv, log.json, curves.png, best.onnx, "
                    "checkpoints/}. Continue a killed run with --resume RUN_DIR.")
    parser.add_argument("--dataset", type=Path, help="DeepHealth dataset YAML (training and validation splits)")
    parser.add_argument("--config", type=Path, help="experiment config YAML (e.g. configs/unet_spider.yml)")
    parser.add_argument("--engine", default="torch", help=f"{', '.join(ENGINES)} (default: torch)")
    parser.add_argument("--device", default=None, help=f"{DEVICE_HELP} (default: cpu)")
    parser.add_argument("--out", type=Path, help="new run directory (must not exist or be empty)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run to its epoch count")
    parser.add_argument("--init", metavar="NAME|M.onnx",
                        help=f"start from this model's weights: {MODEL_CHOICES}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    overrides = parser.add_argument_group("config overrides")
    overrides.add_argument("--epochs", type=int)
    overrides.add_argument("--batch-size", type=int)
    overrides.add_argument("--lr", type=float, help="learning rate")
    overrides.add_argument("--optimizer", help=", ".join(OPTIMIZERS))
    overrides.add_argument("--schedule", help=", ".join(SCHEDULES))
    overrides.add_argument("--seed", type=int)
    overrides.add_argument("--workers", type=int, help="loader threads")
    overrides.add_argument("--threads", type=int, help="engine CPU threads")
    overrides.add_argument("--depth", type=int)
    overrides.add_argument("--base-filters", type=int)
    overrides.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    overrides.add_argument("--spacing", metavar="ROW,COL",
                           help="pixel spacing (mm) of the dataset's slices; overrides the dataset's and the config's "
                                "(needed when the dataset was built without --spacing)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lumbarseg.config import load_config
    from lumbarseg.model.record import short_world
    from lumbarseg.training.distributed import detect_world
    from lumbarseg.training.trainer import resume, train

    given: Dict[str, Any] = {flag: getattr(args, flag) for flag in OVERRIDES if getattr(args, flag) is not None}
    if args.resume is not None:
        fixed = [name for name, value in (("--config", args.config), ("--out", args.out), ("--init", args.init),
                                          ("--spacing", args.spacing)) if value is not None]
        fixed += ["--" + flag.replace("_", "-") for flag in given]
        if fixed:
            raise LumbarsegError("--resume", f"a resumed run keeps its config; drop {', '.join(fixed)}")
        result = resume(args.resume, device=args.device, dataset=args.dataset, progress=not args.no_progress)
    else:
        if args.dataset is None or args.out is None:
            raise LumbarsegError("lumbarseg train", "needs --dataset DS.yml and --out RUN_DIR (or --resume RUN_DIR)")
        config = load_config(args.config, {OVERRIDES[flag]: value for flag, value in given.items()})
        result = train(args.dataset, config, args.out, engine=args.engine, device=args.device or "cpu",
                       init=args.init, progress=not args.no_progress, spacing=_spacing(args.spacing))
    if not detect_world().is_main:
        return 0  # rank 0 reports
    best = f"best epoch {result.best_epoch} (validation mean Dice {result.best_dice:.3f})" \
        if result.best_epoch else "no epoch finished"
    stopped = ", stopped early" if result.stopped_early else ""
    world = f", trained by {short_world(result.worlds[-1])}" if result.worlds else ""
    print(f"{result.run_dir}: {result.epochs_done} epochs, {best}{stopped}{world}")
    return 0


def _spacing(text: Optional[str]) -> Optional[List[float]]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise LumbarsegError("--spacing", f"{text!r} is not ROW,COL in mm") from None
    if len(values) != 2 or min(values) <= 0:
        raise LumbarsegError("--spacing", f"{text!r} is not ROW,COL positive millimetres")
    return values

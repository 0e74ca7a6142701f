"""The run directory: what a training run writes, and how a killed run is found again.

    RUN_DIR/
      run.json            dataset, engine, device, classes, architecture, model metadata (written at start)
      config.yml          the resolved experiment config
      checkpoints/epoch-NNNN/{engine.ckpt, state.json}   the last completed epoch (resume point)
      best.ckpt           engine checkpoint of the best epoch (validation mean Dice)
      best.onnx           the best epoch as an ONNX model with lumbarseg metadata
      log.csv  log.json  curves.png

Every file is written to a temporary name and renamed; a checkpoint folder appears whole or not at
all, so after a kill -9 the newest ``epoch-NNNN`` is always complete.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_dir, write_text

RUN_FILE = "run.json"
CONFIG_FILE = "config.yml"
CHECKPOINTS = "checkpoints"
ENGINE_CHECKPOINT = "engine.ckpt"
STATE_FILE = "state.json"
BEST_CHECKPOINT = "best.ckpt"
BEST_ONNX = "best.onnx"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run may only go into a missing or empty folder (never over an existing run)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise LumbarsegError(run_dir, "already exists and is not empty (use --resume to continue a run, "
                                      "or choose another --out)")


def read_run(run_dir: Path) -> Dict[str, Any]:
    """``run.json`` of an existing run, with a clear error when ``run_dir`` is not a run."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise LumbarsegError(run_dir, f"not a lumbarseg run directory (no {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LumbarsegError(path, f"unreadable run description ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "engine" not in data or "classes" not in data:
        raise LumbarsegError(path, "not a lumbarseg run description")
    return data


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def latest_checkpoint(run_dir: Path) -> Optional[Tuple[int, Path]]:
    """(epochs completed, folder) of the newest complete checkpoint, or None."""
    folder = run_dir / CHECKPOINTS
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = _EPOCH_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return max(found) if found else None


def save_checkpoint(run_dir: Path, epoch: int, engine: Any, state: Dict[str, Any]) -> None:
    """Write ``checkpoints/epoch-NNNN`` (engine checkpoint + trainer state) whole, then drop older ones."""
    folder = run_dir / CHECKPOINTS
    dest = folder / f"epoch-{epoch:04d}"
    with atomic_dir(dest, overwrite=True) as tmp:
        engine.save_checkpoint(tmp / ENGINE_CHECKPOINT)
        write_json(tmp / STATE_FILE, state)
    for child in folder.iterdir():
        match = _EPOCH_DIR.match(child.name)
        if match and int(match.group(1)) < epoch:
            shutil.rmtree(child, ignore_errors=True)


def load_state(checkpoint_dir: Path) -> Dict[str, Any]:
    path = checkpoint_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LumbarsegError(path, f"unreadable trainer state ({type(exc).__name__})") from None

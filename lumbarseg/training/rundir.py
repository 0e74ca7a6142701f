"""The run directory: what a training run writes, and how a killed run is found again.

    RUN_DIR/
      run.json            dataset, engine, device, classes, architecture, model metadata (written at start)
      config.yml          the resolved experiment config, headed by comments saying how it was trained (worlds)
      checkpoints/epoch-NNNN/{engine.ckpt, state.json}   the last completed epoch (resume point)
      best.ckpt           engine checkpoint of the best epoch (validation mean Dice)
      best.onnx           the best epoch as an ONNX model with lumbarseg metadata
      log.csv  log.json  curves.png
      .lock               held (flock) by the training writing the folder: a second one stops

Every file is written to a temporary name and renamed; a checkpoint folder appears whole or not at
all, so after a kill -9 the newest ``epoch-NNNN`` is always complete.
"""
from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_dir, exists_error, write_text
from lumbarseg.io.paths import check_not_input, inside
from lumbarseg.model.record import describe_world

RUN_FILE = "run.json"
CONFIG_FILE = "config.yml"
CHECKPOINTS = "checkpoints"
ENGINE_CHECKPOINT = "engine.ckpt"
STATE_FILE = "state.json"
BEST_CHECKPOINT = "best.ckpt"
BEST_ONNX = "best.onnx"
LOCK_FILE = ".lock"
_RUN_NAMES = {RUN_FILE, CONFIG_FILE, BEST_CHECKPOINT, BEST_ONNX, "log.csv", "log.json", "curves.png", LOCK_FILE}
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` (``flock``, released by the system when the process dies): a second training or
    resume of the same folder stops with one line instead of mixing its files into this run's."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(run_dir / LOCK_FILE, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LumbarsegError(run_dir, f"another training is writing this run folder (it holds {LOCK_FILE}); "
                                          "wait for it to finish, or choose another --out") from None
        yield


def check_new_run_dir(run_dir: Path) -> None:
    """A new run may only go into a missing or empty folder (never over an existing run)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(p.name != LOCK_FILE for p in run_dir.iterdir())):
        raise LumbarsegError(run_dir, "already exists and is not empty (use --resume to continue a run, "
                                      "or choose another --out)")


def check_export_output(run_dir: Path, out: Path, overwrite: bool) -> None:
    """``export``'s output: never the run folder, anything holding it, one of its files or its checkpoints;
    an existing file only with ``overwrite``."""
    check_not_input(out, [("run", run_dir / CHECKPOINTS)])
    if inside(run_dir, out) or (inside(out, run_dir) and (out.exists() or out.name in _RUN_NAMES)):
        raise LumbarsegError(out, f"is a file of the run {run_dir} (a run's files are never replaced); choose "
                                  "another output")
    if out.exists() and not overwrite:
        raise exists_error(out)


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


def write_config(run_dir: Path, config: Any, worlds: Sequence[Dict[str, Any]]) -> None:
    """``config.yml``: the resolved config, headed by one comment line per world that trained the run."""
    header = "".join(f"# trained from epoch {w['first_epoch']} by {describe_world(w)}\n" for w in worlds)
    write_text(run_dir / CONFIG_FILE, header + config.to_yaml())


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

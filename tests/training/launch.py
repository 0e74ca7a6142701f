"""Launching real multi-process trainings from the tests: the environment without any launcher's variables,
torchrun and ``lumbarseg train`` command lines, and readers of what a run wrote."""
from __future__ import annotations

import csv
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from lumbarseg.io import tensors
from lumbarseg.model import metadata

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
TINY = REPO / "configs" / "tiny.yml"
GUARD = Path(__file__).resolve().parent / "rank_guard.py"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
              "SLURM_PROCID", "SLURM_STEP_NUM_TASKS")


def launch_env() -> Dict[str, str]:
    """This environment without a launcher's variables, with the repository and tests/ importable, 1 thread."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now (other test suites on the machine may hold any fixed one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(free_port())] + list(args)


def train_args(dataset: Path, out: Path, *extra: str) -> List[str]:
    return ["train", "--dataset", str(dataset), "--config", str(TINY), "--out", str(out), "--no-progress"] + list(extra)


def config_with(folder: Path, name: str, extra: str) -> Path:
    """configs/tiny.yml with YAML lines appended."""
    path = folder / name
    path.write_text(TINY.read_text() + extra)
    return path


def checkpoint_weights(run: Path) -> Dict[str, np.ndarray]:
    latest = max((run / "checkpoints").iterdir())
    state = tensors.load(latest / "engine.ckpt")  # safetensors: nothing unpickled
    return {k: np.asarray(v, np.float64) for k, v in state["model"].items()}


def read_log(run: Path) -> List[Dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def model_worlds(model: Path) -> List[Dict[str, Any]]:
    """The worlds of a model's training record (ONNX metadata)."""
    return metadata.read(model).training_data["worlds"]

"""The reference runs of the multi-process tests, made once per session: the tiny config for 3 epochs on a small
synthetic dataset, in 1 process and under torchrun with 2 processes on this host (rank 1 guarded: it dies on any
write under the runs' folder). Compared with by ``test_distributed`` (same weights) and ``test_two_hosts`` (the same
run across two network namespaces)."""
from __future__ import annotations

import subprocess
import sys
from typing import Dict

import pytest
from launch import GUARD, launch_env, torchrun, train_args

EPOCHS = 3


@pytest.fixture(scope="session")
def one_host_runs(tmp_path_factory) -> Dict[str, object]:
    """{"dataset": the YAML, "folder": the runs' folder, "one"/"two": the run folders, and each run's stdout}."""
    pytest.importorskip("torch")
    from synthetic_training import make_dataset

    data = make_dataset(tmp_path_factory.mktemp("reference-data"))
    folder = tmp_path_factory.mktemp("reference-runs")
    epochs = ("--epochs", str(EPOCHS))
    single = subprocess.run([sys.executable, "-m", "lumbarseg"] + train_args(data, folder / "one", *epochs),
                            env=launch_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two = subprocess.run(torchrun(str(GUARD), str(folder)) + train_args(data, folder / "two", *epochs),
                         env=launch_env(), capture_output=True, text=True, timeout=300, cwd=folder)
    assert two.returncode == 0, two.stderr[-3000:]
    return {"dataset": data, "folder": folder, "one": folder / "one", "two": folder / "two",
            "one_stdout": single.stdout, "two_stdout": two.stdout}

"""The sbatch examples under a real Slurm (a one-host cluster the tests start: ``slurm_cluster.py``): 2 tasks on a
tiny dataset run to completion and leave a model that records srun's world; ``scancel`` mid-run, then the documented
``RESUME=1 sbatch``, finishes the epochs. The EDDL example runs where pyeddl and mpi4py are installed."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
import slurm_cluster
from launch import LAUNCH_ENV, REPO, TINY, config_with, free_port, model_worlds, read_log

from lumbarseg.training import rundir

EXAMPLES = REPO / "examples" / "slurm"
TWO_TASKS = ("--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10")


@pytest.fixture(scope="module")
def cluster():
    try:
        running = slurm_cluster.start()
    except slurm_cluster.Unavailable as exc:
        pytest.skip(f"no one-host Slurm: {exc}")
    yield running
    running.stop()


def _job_env(cluster, dataset: Path, run: Path, **extra: str) -> Dict[str, str]:
    """The submitting shell's environment: the host's lumbarseg (no container), CPU, the tiny config."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("SLURM_")}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), IMAGE="",
               DEVICE="cpu", DATASET=str(dataset), CONFIG=str(TINY), RUN=str(run))
    env.update(extra)
    try:
        socket.gethostbyname(cluster.node)
    except OSError:  # the node's name does not resolve here: rank 0's address given instead
        env["MASTER_ADDR"] = "127.0.0.1"
    env["MASTER_PORT"] = str(free_port())
    return env


def _finished(cluster, job: int, folder: Path, timeout: float = 240) -> str:
    state = cluster.wait(job, timeout)
    out = slurm_cluster.output(folder, job) or ""
    assert state == "COMPLETED", f"job {job} {state}:\n{out[-3000:]}"
    return out


def test_sbatch_torch_example_runs_two_tasks_to_a_model(cluster, one_host_runs, tmp_path):
    """With ``distributed.batch_norm: local`` (each rank normalises with its half of the batch): the first epoch's
    loss is not the one of the same two ranks with global-batch statistics (one_host_runs)."""
    run = tmp_path / "run"
    config = config_with(tmp_path, "local.yml", "distributed: {batch_norm: local}\n")
    started = time.monotonic()
    job = cluster.sbatch(EXAMPLES / "train-torch.sbatch", *TWO_TASKS, cwd=tmp_path, env=_job_env(
        cluster, one_host_runs["dataset"], run, TRAIN_ARGS="--epochs 1", CONFIG=str(config)))
    out = _finished(cluster, job, tmp_path)
    print(f"{cluster.version()}: job {job} of train-torch.sbatch took {time.monotonic() - started:.1f} s:\n{out}")
    assert f"job {job}: 1 node(s) {cluster.node}, 2 tasks, run folder {run}" in out
    assert f"{run}: 1 epochs, best epoch 1" in out and "trained by 2 processes (srun, 1 node)" in out
    (world,) = model_worlds(run / "best.onnx")
    assert (world["launcher"], world["world_size"], world["nodes"], world["backend"], world["batch_norm"]) == (
        "srun", 2, [socket.gethostname()], "gloo", "local")
    (row,) = read_log(run)
    assert row["world_size"] == "2"
    global_bn = read_log(one_host_runs["two"])[0]
    assert abs(float(row["train_loss"]) - float(global_bn["train_loss"])) > 1e-3, (row, global_bn)


def test_scancel_mid_run_then_the_documented_resume_finishes(cluster, tmp_path):
    from synthetic_training import make_dataset

    data = make_dataset(tmp_path / "data", n_train=8, n_val=2)
    run = tmp_path / "run"
    epochs = 4
    env = _job_env(cluster, data, run, TRAIN_ARGS=f"--epochs {epochs}")
    started = time.monotonic()
    job = cluster.sbatch(EXAMPLES / "train-torch.sbatch", *TWO_TASKS, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 180
    while rundir.latest_checkpoint(run) is None:
        assert cluster.state(job) in ("PENDING", "CONFIGURING", "RUNNING"), slurm_cluster.output(tmp_path, job)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cluster.scancel(job)
    assert cluster.wait(job, 60) == "CANCELLED"
    done = rundir.latest_checkpoint(run)
    assert done is not None and done[0] < epochs
    resumed = cluster.sbatch(EXAMPLES / "train-torch.sbatch", *TWO_TASKS, env=dict(env, RESUME="1"), cwd=tmp_path)
    out = _finished(cluster, resumed, tmp_path)
    print(f"job {job} cancelled after epoch {done[0]} of {epochs}; job {resumed} (RESUME=1) finished; "
          f"{time.monotonic() - started:.1f} s in all:\n{out}")
    assert f"{run}: {epochs} epochs" in out
    assert [int(row["epoch"]) for row in read_log(run)] == list(range(1, epochs + 1))
    assert (run / "best.onnx").is_file()


def test_sbatch_eddl_example_runs_two_mpi_ranks_to_a_model(cluster, tmp_path):
    pytest.importorskip("pyeddl", reason="pyeddl not installed")
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'lumbarseg[mpi]')")
    from synthetic_training import make_dataset

    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    job = cluster.sbatch(EXAMPLES / "train-eddl.sbatch", *TWO_TASKS,
                         env=_job_env(cluster, data, run, TRAIN_ARGS="--epochs 1"), cwd=tmp_path)
    started = time.monotonic()
    out = _finished(cluster, job, tmp_path)
    print(f"job {job} of train-eddl.sbatch took {time.monotonic() - started:.1f} s:\n{out}")
    assert f"{run}: 1 epochs" in out and "trained by 2 processes (srun, 1 node)" in out
    (world,) = model_worlds(run / "best.onnx")
    assert world["launcher"] == "srun" and world["world_size"] == 2 and world["backend"].startswith("MPI (")
    assert world["batch_norm"] == "local"  # EDDL ranks normalise with their own part

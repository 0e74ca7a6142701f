"""Multi-process training: launcher detection and sharding (in-process), and real 2-process runs on the CPU:
torch.distributed (torchrun, gloo) and MPI (mpirun; the EDDL engine where pyeddl and mpi4py are installed)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from launch import (
    GUARD,
    LAUNCH_ENV,
    TESTS,
    checkpoint_weights,
    launch_env,
    model_worlds,
    read_json,
    read_log,
    torchrun,
    train_args,
)

from lumbarseg.cli import main
from lumbarseg.model import metadata
from lumbarseg.training import distributed
from lumbarseg.training.distributed import World, detect_world, first_host, global_batches, my_part

# Adam on the tiny U-Net, 3 epochs: the 2-process weights differ from the 1-process ones only by float
# summation order (measured 3e-5 in the largest weight, of magnitude ~1).
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch) -> None:
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)


# --- the launcher's world and the sharding ----------------------------------------------------


def test_detect_world_reads_each_launcher():
    assert detect_world({}) == World()
    torchrun = detect_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                             "MASTER_PORT": "1234"})
    assert torchrun == World(3, 4, 1, "torchrun", "n1", 1234)
    assert detect_world({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
                         "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == World(1, 2, 1, "mpirun")
    assert detect_world({"PMI_RANK": "2", "PMI_SIZE": "3"}) == World(2, 3, 0, "mpirun")
    srun = detect_world({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
                         "SLURM_STEP_NODELIST": "gpu[07-09,12],cpu1"})
    assert srun == World(5, 8, 1, "srun", "gpu07", 29500)
    # srun --mpi=pmix: the MPI ranks are srun's tasks; MPICH's mpirun under Slurm: an srun step of 2 proxies
    pmix = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "PMIX_RANK": "1", "PMIX_SIZE": "2",
            "SLURM_STEP_NODELIST": "n[1-2]"}
    assert detect_world(pmix) == World(1, 2, 0, "srun", "n1")
    hydra = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "PMI_RANK": "3", "PMI_SIZE": "8"}
    assert detect_world(hydra) == World(3, 8, 0, "mpirun")
    # the batch script of an sbatch job (no srun step): one process, whatever SLURM_NTASKS says
    assert detect_world({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == World()
    assert first_host("node1") == "node1" and first_host("a[1-3]") == "a1"


def test_sharding_covers_every_slice_once_per_epoch():
    """7 slices, global batch 4, 3 ranks: batches [4, 3], every rank gets 1-2 slices of each."""
    order = list(np.random.default_rng(0).permutation(7))
    batches = [order[:4], order[4:]]
    seen = []
    for rank in range(3):
        parts = [my_part(b, World(rank, 3)) for b in global_batches(batches, 3)]
        assert all(1 <= len(p) <= 2 for p in parts)
        seen += [i for p in parts for i in p]
    assert sorted(seen) == list(range(7))
    # a last batch smaller than the world joins the one before: 9 slices, batch 4, 2 ranks -> [4, 5]
    assert [len(b) for b in global_batches([[0, 1, 2, 3], [4, 5, 6, 7], [8]], 2)] == [4, 5]


@pytest.mark.parametrize("env, engine, problem", [
    ({"RANK": "0", "WORLD_SIZE": "7"}, "torch", "the training split has only 6 slices: at most 6 processes"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "eddl", "launch it with mpirun or srun, not torchrun"),
    ({"RANK": "0", "WORLD_SIZE": "5", "LOCAL_RANK": "0"}, "torch", "batch_size 4 is the global batch"),
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "3"}, "eddl", "must be a multiple of 3"),
])
def test_a_world_the_run_cannot_use_is_one_error_line(dataset, tmp_path, capsys, monkeypatch, env, engine, problem):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(train_args(dataset, tmp_path / "run", "--engine", engine)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lumbarseg: error: ") and problem in err[0], err
    assert not (tmp_path / "run").exists()


def test_the_other_ranks_exit_quietly_on_a_world_error(dataset, tmp_path, capsys, monkeypatch):
    """The line comes once, from rank 0: rank 1 finds the same problem and exits 2 without printing it."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(train_args(dataset, tmp_path / "run", "--batch-size", "1")) == 2
    assert capsys.readouterr().err == ""


def test_eddl_under_mpi_without_mpi4py_is_one_error_line(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    assert main(train_args(dataset, tmp_path / "run", "--engine", "eddl")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'lumbarseg[mpi]'" in err[0], err
    assert not (tmp_path / "run").exists()


# --- torch.distributed: 2 processes on this machine -------------------------------------------


def test_ddp_two_ranks_match_one_process_and_only_rank0_writes(one_host_runs, capsys):
    """The same config (global batch 4) in 1 process and under torchrun with 2 (local batches 2 and 1):
    same losses, Dice and weights; rank 1 ran under rank_guard, which kills it on any write in the runs' folder.
    Each run records its world (config.yml, log.csv, log.json, best.onnx, shown by `lumbarseg models`)."""
    one, two = one_host_runs["one"], one_host_runs["two"]
    assert one_host_runs["two_stdout"].count("3 epochs") == 1  # rank 0 reports
    assert "trained by 2 processes (torchrun, 1 node)" in one_host_runs["two_stdout"]
    assert "trained by 1 process" in one_host_runs["one_stdout"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in one_host_runs["folder"].iterdir()) == ["one", "two"]
    one_log, two_log = read_log(one), read_log(two)
    for a, b in zip(one_log, two_log):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-5
        assert a["mean_dice"] == b["mean_dice"]
    ref, got = checkpoint_weights(one), checkpoint_weights(two)
    assert ref.keys() == got.keys()
    worst = max(float(np.abs(ref[k] - got[k]).max()) for k in ref)
    assert worst < TOLERANCE
    moved = max(float(np.abs(ref[k] - _initial(k)).max()) for k in ref if k.endswith("weight"))
    assert moved > 100 * TOLERANCE  # the comparison is not of untrained nets
    # provenance: what each run was trained by
    host = socket.gethostname()
    assert [r["world_size"] for r in one_log] == ["1"] * 3 and [r["world_size"] for r in two_log] == ["2"] * 3
    (world,) = read_json(two / "log.json")["worlds"]
    assert world == {"launcher": "torchrun", "world_size": 2, "nodes": [host], "ranks_per_node": [2],
                     "devices": ["cpu", "cpu"], "backend": "gloo", "global_batch": 4, "per_rank_batch": [2, 2],
                     "batch_norm": "global", "first_epoch": 1, "last_epoch": 3}
    (alone,) = model_worlds(one / "best.onnx")
    assert alone["launcher"] == "none" and alone["world_size"] == 1 and alone["per_rank_batch"] == [4]
    header = (two / "config.yml").read_text().splitlines()[0]
    assert header == f"# trained from epoch 1 by torchrun, 2 processes on 1 node ({host}: 2), cpu, gloo, global " \
                     "batch 4 (2 + 2 per rank), BatchNorm global", header
    best = metadata.read(two / "best.onnx").training_data  # the model of the best epoch
    assert best["worlds"] == [dict(world, last_epoch=best["best_epoch"])]
    assert main(["models", str(two / "best.onnx"), str(one / "best.onnx")]) == 0
    shown = capsys.readouterr().out
    assert f"  world     {header[len('# trained from epoch 1 by '):]}\n" in shown, shown
    assert f"  world     1 process (no launcher) on {host}, cpu, batch 4\n" in shown, shown


def _initial(key: str) -> np.ndarray:
    from synthetic_training import CLASSES, tiny_config

    from lumbarseg.engines.torch_engine import TorchEngine

    engine = TorchEngine(tiny_config().spec(len(CLASSES)), seed=0)
    return engine.state_dict()[key].double().numpy()


def test_kill_9_of_one_rank_stops_the_job_and_resume_finishes(tmp_path):
    """Rank 1 of 2 killed after the first checkpoint: torchrun stops rank 0 and fails; `--resume` by 3 ranks
    (every rank reads the run folder; another world size) continues from the newest complete checkpoint."""
    pytest.importorskip("torch")
    from synthetic_training import make_dataset

    data = make_dataset(tmp_path / "data", n_train=12, n_val=2)
    run = tmp_path / "run"
    epochs = 4
    job = subprocess.Popen(torchrun("-m", "lumbarseg") + train_args(data, run, "--epochs", str(epochs)),
                           env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "epoch-0001").is_dir():
            assert job.poll() is None, job.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        victim = _rank_pid(job.pid, rank=1)
        os.kill(victim, signal.SIGKILL)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "SIGKILL" in err or "Signal 9" in err, err[-3000:]
    from lumbarseg.training import rundir

    done = rundir.latest_checkpoint(run)
    assert done is not None and done[0] < epochs
    resumed = subprocess.run(torchrun("-m", "lumbarseg", "train", "--resume", str(run), "--no-progress", nproc=3),
                             env=launch_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{epochs} epochs" in resumed.stdout
    log = read_log(run)
    assert [int(r["epoch"]) for r in log] == list(range(1, epochs + 1))
    # another world size: one line says so, and the log, the config and the model record both worlds
    done_epochs = done[0]
    (note,) = [line for line in resumed.stderr.splitlines() if "note:" in line]
    assert note == (f"lumbarseg: note: {run}: resumed from epoch {done_epochs + 1} by 3 processes (torchrun, 1 node); "
                    f"{'epoch 1' if done_epochs == 1 else f'epochs 1-{done_epochs}'} ran on 2 processes (torchrun, "
                    "1 node); the global batch stays 4 (1 + 1 + 2 per rank)"), note
    assert [r["world_size"] for r in log] == ["2"] * done_epochs + ["3"] * (epochs - done_epochs)
    worlds = read_json(run / "log.json")["worlds"]
    assert [(w["world_size"], w["first_epoch"], w["last_epoch"]) for w in worlds] == [
        (2, 1, done_epochs), (3, done_epochs + 1, epochs)]
    assert (run / "config.yml").read_text().count("# trained from epoch") == 2
    assert main(["export", str(run), "-o", str(tmp_path / "last.onnx"), "--checkpoint", "last"]) == 0
    assert model_worlds(tmp_path / "last.onnx") == worlds


def _rank_pid(agent: int, rank: int) -> int:
    """The pid of torchrun's worker with this RANK (read from /proc)."""
    children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} among {children}")


# --- MPI: parameter averaging (EDDL engine) ---------------------------------------------------


def _mpirun(n: int) -> List[str]:
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (install an MPI library, e.g. Debian's openmpi-bin)")
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'lumbarseg[mpi]')")
    extra = ["--allow-run-as-root", "--oversubscribe"] if os.geteuid() == 0 else []
    return [mpirun, "-n", str(n)] + extra


@pytest.mark.parametrize("engine", ["eddl", "torch"])
def test_mpi_ranks_hold_identical_weights_after_every_sync(dataset, tmp_path, engine):
    """2 MPI ranks train on their halves of each global batch (6 slices, batch 2: 3 steps an epoch) and
    average every 2 steps and at the epoch's end: 4 syncs in 2 epochs, after each the weights of both ranks
    are equal bit for bit, and before them they had drifted apart. The PyTorch engine stands in for EDDL
    where pyeddl is absent (the averaging is the same code)."""
    pytest.importorskip("pyeddl" if engine == "eddl" else "torch", reason=f"the {engine} engine is not installed")
    launch = _mpirun(2)
    script = TESTS / "training" / "mpi_sync_check.py"
    done = subprocess.run(launch + [sys.executable, str(script), engine, str(dataset), str(tmp_path / "report.txt")],
                          env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    syncs, identical, drifted = map(int, (tmp_path / "report.txt").read_text().split())
    assert syncs == 4 and identical == syncs and drifted >= 1, (syncs, identical, drifted)


def test_mpi_eddl_training_writes_on_rank0_only(dataset, tmp_path):
    pytest.importorskip("pyeddl", reason="pyeddl not installed")
    launch = _mpirun(2)
    done = subprocess.run(launch + [sys.executable, str(GUARD), str(tmp_path)]
                          + train_args(dataset, tmp_path / "run", "--engine", "eddl", "--epochs", "2"),
                          env=launch_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 epochs") == 1
    assert [int(r["epoch"]) for r in read_log(tmp_path / "run")] == [1, 2]
    assert (tmp_path / "run" / "best.onnx").is_file()
    assert distributed.detect_world() == World()  # this process stays outside any launcher

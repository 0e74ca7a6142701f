"""Training across two hosts: two network namespaces joined by a veth pair (``two_hosts.py``) stand in for two
nodes that share the run folder's filesystem. torchrun with a c10d rendezvous on the first host trains one process
per host and gives the 2-process run on one host (losses within 1e-5); mpirun, starting its daemon on the second
host through an rsh agent that enters that namespace instead of ssh, does the same for the EDDL engine."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import two_hosts
from launch import checkpoint_weights, launch_env, model_worlds, read_json, read_log, train_args

LOSS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hosts():
    try:
        made = two_hosts.start()
    except two_hosts.Unavailable as exc:
        pytest.skip(f"no two network namespaces: {exc}")
    yield made
    made.stop()


def _both(commands: Sequence[List[str]], timeout: float = 300) -> List[subprocess.CompletedProcess]:
    """Run the commands at once; their results, after both ended."""
    jobs = [subprocess.Popen(c, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands]
    try:
        outs = [job.communicate(timeout=timeout) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
    return [subprocess.CompletedProcess(c, j.returncode, o, e) for c, j, (o, e) in zip(commands, jobs, outs)]


def _same_losses(reference: Path, run: Path) -> None:
    ref, got = read_log(reference), read_log(run)
    assert len(ref) == len(got) and ref
    worst = max(abs(float(a["train_loss"]) - float(b["train_loss"])) for a, b in zip(ref, got))
    assert worst < LOSS_TOLERANCE, (ref, got)
    assert [r["mean_dice"] for r in ref] == [r["mean_dice"] for r in got]


def test_torchrun_c10d_across_two_hosts_equals_two_processes_on_one(hosts, one_host_runs, tmp_path):
    reference = one_host_runs["two"]
    epochs = str(len(read_log(reference)))
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{two_hosts.ADDRESSES[0]}:29400", "--rdzv-id", "ls-test"]
    args = ["-m", "lumbarseg"] + train_args(one_host_runs["dataset"], run, "--epochs", epochs)
    done = _both([hosts.command(h, torchrun + ["--rdzv-conf", f"is_host={int(h == 0)}"] + args) for h in (0, 1)])
    for result in done:
        assert result.returncode == 0, result.stderr[-3000:]
    _same_losses(reference, run)
    ref, got = checkpoint_weights(reference), checkpoint_weights(run)
    assert max(float(np.abs(ref[k] - got[k]).max()) for k in ref) < 1e-5
    (world,) = read_json(run / "log.json")["worlds"]
    assert sorted(world["nodes"]) == list(two_hosts.NAMES) and world["ranks_per_node"] == [1, 1]
    assert (world["launcher"], world["world_size"], world["backend"]) == ("torchrun", 2, "gloo")
    assert "trained by 2 processes (torchrun, 2 nodes)" in "".join(r.stdout for r in done)


def test_mpirun_eddl_across_two_hosts_equals_two_ranks_on_one(hosts, tmp_path):
    pytest.importorskip("pyeddl", reason="pyeddl not installed")
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'lumbarseg[mpi]')")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (Debian: openmpi-bin)")
    from synthetic_training import make_dataset

    data = make_dataset(tmp_path / "data")
    args = ["--engine", "eddl", "--epochs", "2"]
    train = [sys.executable, "-m", "lumbarseg"]
    root = ["--allow-run-as-root", "--oversubscribe"]
    (one_host,) = _both([[mpirun, "-n", "2", *root] + train + train_args(data, tmp_path / "one-host", *args)])
    assert one_host.returncode == 0, one_host.stderr[-3000:]
    across = hosts.command(0, [mpirun, "-n", "2", "--host", ",".join(f"{n}:1" for n in two_hosts.NAMES), *root,
                               "--mca", "plm_rsh_agent", str(hosts.rsh_agent(tmp_path)), "--mca", "btl", "tcp,self",
                               "--mca", "btl_tcp_if_include", two_hosts.INTERFACE,
                               "--mca", "oob_tcp_if_include", two_hosts.INTERFACE,
                               "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS"]
                           + train + train_args(data, tmp_path / "two-hosts", *args))
    (two,) = _both([across])
    assert two.returncode == 0, two.stderr[-3000:]
    _same_losses(tmp_path / "one-host", tmp_path / "two-hosts")
    (world,) = model_worlds(tmp_path / "two-hosts" / "best.onnx")
    assert world["nodes"] == list(two_hosts.NAMES) and world["launcher"] == "mpirun"
    assert world["backend"].startswith("MPI (") and world["batch_norm"] == "local"

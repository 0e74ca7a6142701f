"""A one-host Slurm cluster for the tests: munged, slurmctld and slurmd (Debian's ``slurm-wlm`` and ``munge``) with
a temporary slurm.conf that makes this machine one node of 2 CPUs, all in a temporary folder, on free ports of
127.0.0.1, started by :func:`start` and stopped (jobs cancelled, daemons ended, folder removed) by ``stop``.
Where it cannot start, :class:`Unavailable` says why (the tests skip with that reason)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from launch import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scancel", "scontrol", "sinfo")
PARTITION = "test"


class Unavailable(Exception):
    """Slurm cannot run here (the reason)."""


class SlurmCluster:
    def __init__(self) -> None:
        # a short path: munge's socket path must fit a sockaddr_un (108 bytes)
        self.folder = Path(tempfile.mkdtemp(prefix="ls-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.socket = self.folder / "munge" / "munge.socket"
        self.processes: List[subprocess.Popen] = []

    @property
    def env(self) -> Dict[str, str]:
        """What a client (sbatch, scancel, ...) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **self.env))
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def version(self) -> str:
        return self._run("sinfo", "--version").stdout.strip()  # e.g. "slurm-wlm 22.05.8"

    def start(self) -> None:
        munge = self.folder / "munge"
        munge.mkdir(mode=0o711)
        key = munge / "munge.key"
        self._run("mungekey", "--create", f"--keyfile={key}")
        key.chmod(0o400)
        self._run("munged", "--force", f"--socket={self.socket}", f"--key-file={key}",
                  f"--log-file={munge / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
                  f"--seed-file={munge / 'munged.seed'}")
        for name in ("state", "spool"):
            (self.folder / name).mkdir()
        f = self.folder
        self.conf.write_text("\n".join([
            "ClusterName=lumbarseg-test", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={self.socket}", "CredType=cred/munge",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}", f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={f / 'slurmctld.log'}", f"SlurmdLogFile={f / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2",
            "SlurmdParameters=config_overrides",  # CPUs=2 whatever this machine has
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))
        env = dict(os.environ, **self.env)
        for command in (["slurmctld", "-D", "-c", "-f", str(self.conf)],
                        ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)]):
            with open(self.folder / f"{command[0]}.out", "w") as log:  # the daemon keeps its own descriptor
                self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                       start_new_session=True))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            state = self._run("sinfo", "-h", "-o", "%t", check=False, timeout=10).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.3)
        raise Unavailable(f"the one-host Slurm did not come up: {self._logs()}")

    def _logs(self) -> str:
        tails = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.folder / name
            if path.is_file():
                tails += [f"{name}: {line}" for line in path.read_text(errors="replace").splitlines()[-3:]]
        return " | ".join(tails)

    def sbatch(self, script: Path, *options: str, env: Dict[str, str], cwd: Path) -> int:
        """Submit ``script``; the job id."""
        done = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True,
                              timeout=30, env=dict(env, **self.env), cwd=cwd)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch: {done.stderr.strip()}")
        return int(done.stdout.strip().split(";")[0])

    def state(self, job: int) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, ...)."""
        shown = self._run("scontrol", "-o", "show", "job", str(job)).stdout
        match = re.search(r"\bJobState=(\S+)", shown)
        return match.group(1) if match else "UNKNOWN"

    def wait(self, job: int, timeout: float) -> str:
        """The job's final state, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job)
            if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still {state} after {timeout} s: {self._logs()}")
            time.sleep(0.2)

    def scancel(self, job: int) -> None:
        self._run("scancel", str(job))

    def stop(self) -> None:
        self._run("scancel", f"--partition={PARTITION}", check=False)
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self.socket.exists():  # munged --stop waits for the daemon to end (it writes its seed file last)
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["munged", "--stop", f"--socket={self.socket}"], capture_output=True, timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> SlurmCluster:
    """A running one-host cluster, or :class:`Unavailable` with the reason."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed (Debian: slurm-wlm munge; .ci/install-hpc)")
    if os.geteuid() != 0:
        raise Unavailable("slurmd runs jobs as root here (SlurmdUser=root): needs root")
    cluster = SlurmCluster()
    try:
        cluster.start()
    except (Unavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        raise Unavailable(str(exc)) from None
    return cluster


def output(folder: Path, job: int) -> Optional[str]:
    """The job's output file (``slurm-JOB.out`` in its working folder), or None."""
    path = folder / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.is_file() else None

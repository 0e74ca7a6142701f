"""Multi-process training: the launcher's world, sharded batches, rank-0 writes and the collectives the loop needs.

One process per rank, started by a launcher; nothing changes without one (world size 1)::

    torchrun --nproc-per-node N -m lumbarseg train ...     RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    mpirun -n N lumbarseg train ...                        OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK, PMI_RANK/SIZE
    srun lumbarseg train ...                               SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
                                                           master = first host of SLURM_STEP_NODELIST
                                                           (also srun --mpi=pmix: MPI ranks of an srun step)

The PyTorch engine trains with torch.distributed (DistributedDataParallel, ``lumbarseg.engines.torch_distributed``);
the EDDL engine with one net per rank whose parameters (BatchNorm statistics included) are averaged over MPI
(mpi4py) every ``distributed.sync_every`` batches and at the end of every epoch.

Sharding. ``batch_size`` is the global batch: every rank draws the same seeded shuffle of the training split,
cuts it into the same global batches and takes its own contiguous part of each (sizes differ by at most one),
so the data of a step and the learning rate are those of one process with the same config. No slice is
dropped or repeated: a last batch smaller than the world size joins the batch before it (the EDDL engine
takes whole batches only: see :class:`ShardedSource`). Validation is
sharded the same way and its Dice counts summed over the ranks, which gives the single-process Dice exactly.
Only rank 0 writes the run folder; the epoch's record and stop decision are broadcast from rank 0.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lumbarseg.engines.collectives import DEFAULT_PORT, Communicator, World
from lumbarseg.errors import LumbarsegError

Batch = Tuple[np.ndarray, np.ndarray]


class WorldError(LumbarsegError):
    """A problem every rank finds alike (the launch, the dataset): only rank 0 prints it."""

    main_only = True


def detect_world(env: Optional[Mapping[str, str]] = None) -> World:
    """The world the launcher describes in the environment: torchrun; Open MPI's mpirun, or PMI/PMIx ranks that
    are not srun's tasks (e.g. MPICH's mpirun); an srun step (its MPI ranks also see PMI/PMIx variables)."""
    env = os.environ if env is None else env

    def number(*names: str, default: Optional[int] = None) -> Optional[int]:
        for name in names:
            if env.get(name, "").strip():
                try:
                    return int(env[name])
                except ValueError:
                    raise LumbarsegError(name, f"not an integer: {env[name]!r}") from None
        return default

    master = env.get("MASTER_ADDR") or "127.0.0.1"
    port = number("MASTER_PORT", default=DEFAULT_PORT)
    pmi = number("PMI_SIZE", "PMIX_SIZE")
    step = number("SLURM_STEP_NUM_TASKS") if "SLURM_PROCID" in env else None  # srun's step (not the batch script)
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun"
        rank, size, local = number("RANK"), number("WORLD_SIZE"), number("LOCAL_RANK", default=0)
    elif number("OMPI_COMM_WORLD_SIZE") is not None or (pmi is not None and pmi != step):
        launcher = "mpirun"
        rank = number("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", default=0)
        size = number("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
        local = number("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", default=0)
    elif step is not None:  # srun's tasks, MPI ranks started by srun --mpi=pmix included
        launcher = "srun"
        rank, size, local = number("SLURM_PROCID"), step, number("SLURM_LOCALID", default=0)
        if not env.get("MASTER_ADDR"):
            master = first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1")
    else:
        return World()
    assert rank is not None and size is not None and local is not None and port is not None
    if size < 1 or not 0 <= rank < size:
        raise LumbarsegError(f"{launcher} environment", f"rank {rank} outside a world of size {size}")
    return World(rank, size, local, launcher, master, port)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[07-09,12],cpu1`` -> ``gpu07``."""
    match = re.match(r"\s*([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        return nodelist.strip()
    prefix, ranges = match.group(1), match.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def check_world(world: World, engine: str, training_slices: int, batch_size: int) -> None:
    """Refuse what this world cannot run, with one clear line (the same on every rank)."""
    if not world.distributed:
        return
    where = f"{world.launcher} world of {world.size} processes"
    if engine == "eddl" and world.launcher == "torchrun":
        raise WorldError(where, "--engine eddl trains data-parallel over MPI: launch it with mpirun or srun, "
                                    "not torchrun")
    if training_slices < world.size:
        raise WorldError(where, f"the training split has only {training_slices} slices: at most "
                                    f"{training_slices} processes")
    if batch_size < world.size:
        raise WorldError(where, f"batch_size {batch_size} is the global batch: it needs at least one slice "
                                    f"per process (batch_size >= {world.size})")
    if engine == "eddl" and (batch_size % world.size or training_slices < batch_size):
        raise WorldError(where, f"the EDDL engine trains on equal parts of whole batches: batch_size "
                                f"({batch_size}) must be a multiple of {world.size} and at most the "
                                f"{training_slices} training slices")


# --- communication ----------------------------------------------------------------------------


class MpiCommunicator(Communicator):
    """MPI_COMM_WORLD through mpi4py (the EDDL engine's data parallelism)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise WorldError(f"{world.launcher} world of {world.size} processes",
                             f"{exc.name or 'mpi4py'} cannot be imported ({exc}); the EDDL engine needs "
                             "mpi4py and an MPI library: pip install 'lumbarseg[mpi]'") from None
        self.mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.backend = "MPI (" + MPI.Get_library_version().split(",")[0].strip() + ")"  # e.g. MPI (Open MPI v4.1.4)
        if self.comm.Get_size() != world.size or self.comm.Get_rank() != world.rank:
            raise LumbarsegError("MPI", f"MPI_COMM_WORLD has rank {self.comm.Get_rank()} of {self.comm.Get_size()}, "
                                        f"the launcher said {world.rank} of {world.size}")

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(array)
        out = np.empty_like(array)
        self.comm.Allreduce(array, out, op=self.mpi.SUM)
        return out

    def broadcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> List[Any]:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()


def connect(world: World, engine: str, device: Any, timeout_s: float) -> Communicator:
    """The communicator of this engine's distributed mode (torch.distributed or MPI)."""
    if engine == "torch":
        from lumbarseg.engines.torch_distributed import TorchCommunicator

        return TorchCommunicator(world, device, timeout_s)
    return MpiCommunicator(world)


def local_device(device: Any, world: World) -> Any:
    """One GPU per local rank: ``cuda`` -> ``cuda:LOCAL_RANK``; ``cuda:0,1,...``: the ranks share these ids out."""
    if not world.distributed or device.kind != "cuda":
        return device
    if len(device.ids) > 1:  # the ranks of a node share out these GPUs
        return type(device)("cuda", (device.ids[world.local_rank % len(device.ids)],))
    return type(device)("cuda", (world.local_rank,))


# --- sharding ---------------------------------------------------------------------------------


def global_batches(batches: Sequence[List[int]], size: int) -> List[List[int]]:
    """The loader's batches with a last batch smaller than ``size`` joined to the one before (nothing dropped)."""
    out = [list(b) for b in batches]
    if len(out) > 1 and len(out[-1]) < size:
        out[-2].extend(out.pop())
    return out


def my_part(positions: Sequence[int], world: World) -> List[int]:
    """This rank's contiguous part of ``positions`` (parts differ in length by at most one)."""
    n = len(positions)
    start = world.rank * n // world.size
    end = (world.rank + 1) * n // world.size
    return list(positions[start:end])


class ShardedSource:
    """A trainer ``BatchSource`` over ``SliceLoader`` s: this rank's part of every global training batch,
    and its contiguous part of the validation split in batches of ``batch_size``. ``whole_batches``
    (EDDL, whose training net cannot step on a batch smaller than its first): full global batches only,
    in equal parts; the epoch's last partial batch is left out, as ECVL's DLDataset does in one process."""

    def __init__(self, loaders: Dict[str, Any], world: World, whole_batches: bool = False) -> None:
        self.loaders = loaders
        self.world = world
        self.whole_batches = whole_batches

    def _plan(self, split: str) -> List[List[int]]:
        loader = self.loaders[split]
        if split == "training":
            if self.whole_batches:
                return [my_part(b, self.world) for b in loader.batches() if len(b) == loader.batch_size]
            return [my_part(b, self.world) for b in global_batches(loader.batches(), self.world.size)]
        mine = my_part(loader.order(), self.world)
        size = loader.batch_size
        return [mine[i:i + size] for i in range(0, len(mine), size)]

    def num_batches(self, split: str) -> int:
        return len(self._plan(split))

    def batches(self, split: str, epoch: int) -> Iterator[Batch]:
        loader = self.loaders[split]
        loader.set_epoch(epoch)
        return loader.iterate(self._plan(split))


# --- what the loop does with it ---------------------------------------------------------------


class Replica:
    """This process's part in a run; with a world of one every method is a no-op (plain training)."""

    def __init__(self, world: Optional[World] = None, comm: Optional[Communicator] = None, sync_every: int = 1,
                 average: bool = False, batch_norm: str = "global") -> None:
        self.world = world or World()
        self.comm = comm
        self.sync_every = sync_every
        self.average = average  # MPI parameter averaging (EDDL); torch.distributed syncs in backward
        self.syncs = 0
        # BatchNorm statistics: of the global batch, or of each rank's part (always so with MPI averaging)
        self.batch_norm = "local" if average and self.distributed else batch_norm

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def distributed(self) -> bool:
        return self.comm is not None

    def prepare(self, engine: Any) -> None:
        """torch.distributed: the engine wraps its net in DDP (MPI averaging needs nothing from the engine)."""
        if self.comm is not None and not self.average:
            engine.distribute(self.batch_norm)

    def after_step(self, engine: Any, step: int, n_steps: int) -> None:
        """MPI: average the parameters every ``sync_every`` steps and after the epoch's last;
        torch.distributed with per-rank BatchNorm: average its running statistics after the epoch's last."""
        if self.average and ((step + 1) % self.sync_every == 0 or step + 1 == n_steps):
            average_weights(engine, self.comm)
            self.syncs += 1
        elif self.comm is not None and not self.average and step + 1 == n_steps:
            engine.end_epoch()

    def mean_loss(self, losses: List[float]) -> float:
        """The epoch's training loss: the mean over steps (and over ranks where each has its own loss)."""
        if not self.average or self.comm is None:
            return float(np.mean(losses))
        total = self.comm.allreduce(np.array([np.sum(losses, dtype=np.float64), len(losses)], np.float64))
        return float(total[0] / total[1])

    def sum(self, array: np.ndarray) -> np.ndarray:
        return self.comm.allreduce(array) if self.comm is not None else array

    def agree(self, obj: Any) -> Any:
        """Rank 0's value (the epoch record, the stop decision) on every rank."""
        return self.comm.broadcast(obj) if self.comm is not None else obj

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` in rank order (``[obj]`` in one process)."""
        return self.comm.gather(obj) if self.comm is not None else [obj]

    @property
    def backend(self) -> str:
        return self.comm.backend if self.comm is not None else "none"

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.barrier()

    def close(self) -> None:
        if self.comm is not None:
            self.comm.close()


def average_weights(engine: Any, comm: Any) -> None:
    """Replace the engine's parameters (and BN statistics) by their mean over the ranks (one Allreduce)."""
    weights = engine.get_weights()
    flat = np.concatenate([np.asarray(a, np.float64).ravel() for arrays in weights for a in arrays])
    mean = comm.allreduce(flat) / comm.world.size
    out, at = [], 0
    for arrays in weights:
        layer = []
        for a in arrays:
            layer.append(mean[at:at + a.size].reshape(a.shape).astype(np.float32))
            at += a.size
        out.append(layer)
    engine.set_weights(out)


def start(engine: str, device: Any, config: Any, training_slices: int) -> Tuple[Replica, Any]:
    """Detect the launcher, check the world and join it: (replica, this rank's device)."""
    from lumbarseg.engines.base import ENGINES, get_engine

    if engine not in ENGINES:
        get_engine(engine)  # the unknown-engine error
    world = detect_world()
    if not world.distributed:
        return Replica(world), device
    check_world(world, engine, training_slices, config.batch_size)
    device = local_device(device, world)
    comm = connect(world, engine, device, config.distributed.timeout_s)
    return Replica(world, comm, config.distributed.sync_every, average=engine != "torch",
                   batch_norm=config.distributed.batch_norm), device

"""What a multi-process job looks like to an engine: this process's place in it (:class:`World`) and the
collectives the training loop needs (:class:`Communicator`), which each backend implements (torch.distributed in
``torch_distributed``, MPI in ``lumbarseg.training.distributed``). Launcher detection lives with training."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class World:
    """This process's place in the job. ``launcher`` is None for a plain single-process run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launcher: Optional[str] = None  # torchrun | mpirun | srun
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


class Communicator:
    """The collectives the loop needs, on numpy arrays and small picklable objects. ``backend`` names the
    transport (gloo, nccl, or the MPI library) for the run's record."""

    backend = "none"

    def __init__(self, world: World) -> None:
        self.world = world

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over the ranks (float64 or int64 in and out)."""
        raise NotImplementedError

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        raise NotImplementedError

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Leave the job's collectives (after the last one)."""

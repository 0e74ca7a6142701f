"""Run under ``mpirun -n 2``: both ranks train ENGINE on their parts of the same global batches and average
their parameters with ``distributed.average_weights`` every 2 steps and at each epoch's end; after every
averaging rank 0 gathers both ranks' weights and compares them bit for bit, and before it checks that the
ranks had drifted apart (so the comparison can fail).

    mpirun -n 2 python mpi_sync_check.py ENGINE DATASET.yml REPORT.txt   -> REPORT: "<syncs> <identical> <drifted>"
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from synthetic_training import tiny_config

from lumbarseg.data.deephealth_yaml import load_dataset
from lumbarseg.engines.base import Device, get_engine
from lumbarseg.training.distributed import MpiCommunicator, Replica, ShardedSource, detect_world
from lumbarseg.training.sources import SliceLoaderSource


def flat(engine) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float32).ravel() for arrays in engine.get_weights() for a in arrays])


def main(engine_name: str, dataset: str, report: str) -> int:
    world = detect_world()
    comm = MpiCommunicator(world)
    ds = load_dataset(dataset)
    config = tiny_config(batch_size=2).with_classes(ds.classes, source="test")
    engine = get_engine(engine_name)(config.spec(), Device("cpu"), threads=1, seed=0)
    engine.configure_training(config.optimizer, config.loss)
    replica = Replica(world, comm, sync_every=2, average=True)
    source = ShardedSource(SliceLoaderSource(ds, config).loaders, world)
    syncs = identical = drifted = 0
    for epoch in range(2):
        n = source.num_batches("training")
        for step, (images, labels) in enumerate(source.batches("training", epoch)):
            engine.train_step(images, labels)
            before = comm.comm.gather(flat(engine), root=0)
            replica.after_step(engine, step, n)
            if replica.syncs > syncs:
                syncs = replica.syncs
                after = comm.comm.gather(flat(engine), root=0)
                if world.is_main:
                    drifted += int(not np.array_equal(before[0], before[1]))
                    identical += int(np.array_equal(after[0], after[1]))
    if world.is_main:
        Path(report).write_text(f"{syncs} {identical} {drifted}\n")
    comm.barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))

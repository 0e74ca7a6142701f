"""Where a training run's batches come from: the interface the trainer reads, and the portable loader behind it.

Every source yields, per split and epoch, images float32 (N, C, H, W) and labels int64 (N, H, W) whose order and
augmentation depend only on the seed and the epoch. The default is :class:`SliceLoaderSource`
(``lumbarseg.data.loader``); an engine may bring its own (EDDL: pyecvl's DLDataset), and a distributed run shards
the portable loader (:class:`lumbarseg.training.distributed.ShardedSource`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple

import numpy as np

from lumbarseg.config import ExperimentConfig, sized_augmentation
from lumbarseg.data.deephealth_yaml import DeepHealthDataset
from lumbarseg.training import distributed

Batch = Tuple[np.ndarray, np.ndarray]


class BatchSource:
    """Batches of the training and validation splits: images float32 (N, C, H, W), labels int64 (N, H, W)."""

    def num_batches(self, split: str) -> int:
        raise NotImplementedError

    def batches(self, split: str, epoch: int) -> Iterable[Batch]:
        """One pass over ``split``; the order and augmentation depend only on the seed and ``epoch``."""
        raise NotImplementedError


BatchSourceFactory = Callable[[DeepHealthDataset, ExperimentConfig], BatchSource]


class SliceLoaderSource(BatchSource):
    """The default: ``lumbarseg.data.loader.SliceLoader`` per split (training shuffled, validation in order)."""

    def __init__(self, dataset: DeepHealthDataset, config: ExperimentConfig) -> None:
        from lumbarseg.data.loader import SliceLoader

        self.loaders = {
            split: SliceLoader(dataset, split, config.batch_size, augmentation=sized_augmentation(config, split),
                               shuffle=split == "training", seed=config.seed, workers=config.workers)
            for split in ("training", "validation")
        }

    def num_batches(self, split: str) -> int:
        return len(self.loaders[split])

    def batches(self, split: str, epoch: int) -> Iterable[Batch]:
        loader = self.loaders[split]
        loader.set_epoch(epoch)
        return iter(loader)


def batch_source_for(engine_cls: Any, ds: DeepHealthDataset, config: ExperimentConfig,
                     factory: Optional[BatchSourceFactory], replica: distributed.Replica) -> BatchSource:
    """Where a run's batches come from: the portable loader sharded across ranks when distributed, else
    ``factory``, else the engine's own (pyecvl's DLDataset for EDDL), else the portable loader."""
    if replica.distributed:  # the portable loader, sharded (see distributed.py)
        return distributed.ShardedSource(SliceLoaderSource(ds, config).loaders, replica.world,  # type: ignore
                                         whole_batches=replica.average)
    if factory is not None:
        return factory(ds, config)
    native = getattr(engine_cls, "batch_source", None)
    source = native(ds, config) if native is not None else None
    return source if source is not None else SliceLoaderSource(ds, config)

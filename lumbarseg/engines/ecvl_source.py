"""Training batches from pyecvl's ``DLDataset``: the EDDL engine's batch source when pyecvl is installed."""
from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import numpy as np
import pyeddl  # noqa: F401  (imported before pyecvl, always)
from pyeddl.tensor import Tensor

from lumbarseg.config import sized_augmentation
from lumbarseg.errors import LumbarsegError


class DLDatasetSource:
    """Training and validation batches from pyecvl's ``DLDataset`` with the run's augmentation spec as ECVL
    containers (:mod:`lumbarseg.engines.ecvl_augment`), the same spec the portable loader runs.

    ECVL's ``LoadBatch`` fills whole batches only: training drops the last partial batch of each (shuffled)
    epoch; validation uses the largest batch size up to ``batch_size`` that divides the split, so every
    slice is scored. Shuffle and augmentation draw from ECVL's generators, seeded from (seed, epoch).
    """

    def __init__(self, dataset: Any, config: Any) -> None:
        from pyecvl import ecvl

        from lumbarseg.engines.ecvl_augment import build_dataset_augmentations

        self.ecvl = ecvl
        self.seed = int(config.seed)
        self.counts = {split: len(dataset.split.get(split, [])) for split in ("training", "validation")}
        self.sizes = {"training": max(1, min(config.batch_size, self.counts["training"])),
                      "validation": max(d for d in range(1, min(config.batch_size, self.counts["validation"]) + 1)
                                        if self.counts["validation"] % d == 0)}
        specs = {split: sized_augmentation(config, split) for split in self.sizes}
        augs = build_dataset_augmentations(specs["training"], specs["validation"], None)
        # one DLDataset per split: ECVL 1.0.3's SetBatchSize refuses a batch as large as the split
        self.loaders = {split: self._open(dataset, size, augs) for split, size in self.sizes.items()}
        # ECVL sizes its tensors (resize_dims_) from the training split's augmentation; validation may differ
        # (training on crops), so each split's (H, W) is its first slice's after its own augmentation, run by the
        # portable loader, and each DLDataset is told its split's size.
        self.shapes = {split: self._output_shape(dataset, split, spec) for split, spec in specs.items()}
        for split, loader in self.loaders.items():
            loader.resize_dims_ = self.shapes[split]
        self.channels = int(self.loaders["training"].n_channels_)

    def _open(self, dataset: Any, batch_size: int, augs: Any) -> Any:
        ecvl = self.ecvl
        # a 2.5D sample's locations are stacked by ECVL into one image of ColorType none ("xyo"), which it cannot
        # convert to GRAY: ask for none, and each slice stays one channel
        colour = ecvl.ColorType.GRAY if len(dataset.slice_channels) == 1 else ecvl.ColorType.none
        try:
            return ecvl.DLDataset(str(dataset.source), batch_size, augs, colour, ecvl.ColorType.GRAY)
        except RuntimeError as exc:
            raise LumbarsegError(dataset.where, f"pyecvl's DLDataset could not read it ({exc})") from None

    @staticmethod
    def _output_shape(dataset: Any, split: str, augmentation: Any) -> List[int]:
        from lumbarseg.data.loader import SliceLoader

        loader = SliceLoader(dataset, split, 1, augmentation, shuffle=False, workers=0)
        image, _ = loader.load_sample(0, 0)
        return [int(d) for d in image.shape[-2:]]

    def num_batches(self, split: str) -> int:
        return self.counts[split] // self.sizes[split]

    def batches(self, split: str, epoch: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        ecvl = self.ecvl
        kind = getattr(ecvl.SplitType, split)
        size = self.sizes[split]
        ecvl.DLDataset.SetSplitSeed(self.seed * 100003 + epoch)
        ecvl.AugmentationParam.SetSeed(self.seed * 100003 + epoch)
        loader = self.loaders[split]
        loader.SetSplit(kind)
        loader.ResetBatch(kind, split == "training")
        x = Tensor([size, self.channels] + self.shapes[split])
        y = Tensor([size, 1] + self.shapes[split])
        for _ in range(self.num_batches(split)):
            loader.LoadBatch(x, y)
            images = np.array(x.getdata(), dtype=np.float32)
            labels = np.rint(np.array(y.getdata())[:, 0]).astype(np.int64)
            yield images, labels

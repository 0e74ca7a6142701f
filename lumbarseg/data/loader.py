"""The portable batch loader: DeepHealth YAML split -> augmented (images, labels) numpy batches, no pyecvl needed.

Randomness is a pure function of (seed, epoch, sample): the shuffle order comes from ``(seed, epoch)`` and
each sample's augmentation from ``(seed, epoch, index in the dataset)``, so batches are identical whatever
the number of workers or their timing. Slices are read per batch (worker threads: OpenCV and numpy
release the GIL in the heavy parts) and at most ``prefetch`` batches wait in memory.

Intensities follow ECVL's DLDataset: images enter the augmentation as 8-bit (16-bit PNGs keep their high
byte, as OpenCV's 8-bit read in ECVL does) and the spec runs through
:func:`~lumbarseg.transforms.ecvl_spec.with_model_range`, which ends it with ``AugToFloat32 divisor=255``
unless the spec sets the range itself: without such an op, the model sees float32 in [0, 1].
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Deque, Iterator, List, Tuple, Union

import numpy as np

from lumbarseg.data.deephealth_yaml import DeepHealthDataset, load_dataset
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.slices import read_grey
from lumbarseg.transforms.augment import Augmenter, apply_steps
from lumbarseg.transforms.ecvl_spec import AugSpec, coerce_spec, with_model_range

Batch = Tuple[np.ndarray, np.ndarray]


class SliceLoader:
    """Batches of one split, augmented, without pyecvl: images float32 (N, C, H, W) and class indices int64 (N, H, W).

    C is 1, or the number of a 2.5D dataset's slice channels: every channel gets the same drawn augmentation, so
    they stay aligned. Randomness comes from (seed, epoch, sample), so a run is reproducible whatever the number
    of workers.

    Args:
        dataset: a dataset or the path of its YAML.
        split: the split to read.
        batch_size: slices per batch.
        augmentation: ECVL augmentation text or a parsed spec (None: none); `AugToFloat32` to [0, 1] is added
            unless the spec scales intensities itself.
        shuffle: shuffle each epoch.
        seed: the seed of shuffles and augmentation.
        drop_last: leave out the last, partial batch.
        workers: threads reading slices (0: in the caller's thread).
        prefetch: batches read ahead.
    """

    def __init__(self, dataset: Union[DeepHealthDataset, str, Path], split: str, batch_size: int,
                 augmentation: Union[AugSpec, str, None] = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, workers: int = 2, prefetch: int = 4) -> None:
        if not isinstance(dataset, DeepHealthDataset):
            dataset = load_dataset(dataset)
        if batch_size < 1:
            raise LumbarsegError("loader", f"batch_size must be >= 1, got {batch_size}")
        if workers < 0 or prefetch < 1:
            raise LumbarsegError("loader", f"need workers >= 0 and prefetch >= 1, got {workers} and {prefetch}")
        self.where = dataset.where
        self.pairs: List[Tuple[List[Path], Path]] = dataset.channel_pairs(split)
        self.indices: List[int] = dataset.split_indices(split)
        if not self.pairs:
            raise LumbarsegError(self.where, f"split {split!r} is empty")
        self.num_classes = len(dataset.classes)
        self.spec = with_model_range(coerce_spec(augmentation))
        self.augmenter = Augmenter(self.spec)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.workers = workers
        self.prefetch = prefetch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        count = len(self.pairs) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def order(self) -> List[int]:
        """Positions in the split, in this epoch's order."""
        if not self.shuffle:
            return list(range(len(self.pairs)))
        return [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.pairs))]

    def batches(self) -> List[List[int]]:
        """This epoch's batches as lists of split positions."""
        order = self.order()
        size = self.batch_size
        return [order[number * size:(number + 1) * size] for number in range(len(self))]

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(self.batches())

    def iterate(self, batches: List[List[int]]) -> Iterator[Batch]:
        """Load these batches of split positions (this epoch's augmentation), prefetched by the workers."""
        epoch = self.epoch
        if self.workers == 0:
            for positions in batches:
                yield self.load_batch(positions, epoch)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="lumbarseg-loader") as pool:
            pending: Deque[Future] = deque()
            try:
                for positions in batches:
                    pending.append(pool.submit(self.load_batch, positions, epoch))
                    if len(pending) >= self.prefetch:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def load_batch(self, positions: List[int], epoch: int) -> Batch:
        """Read and augment the samples at these split positions into one batch."""
        samples = [self.load_sample(position, epoch) for position in positions]
        shapes = {image.shape for image, _ in samples}
        if len(shapes) > 1:
            first, other = samples[0][0].shape, next(s for s in shapes if s != samples[0][0].shape)
            name = next(str(self.pairs[p][0][0]) for p, (image, _) in zip(positions, samples) if image.shape == other)
            raise LumbarsegError(name, f"slice size {other[2]}x{other[1]} (WxH) differs from {first[2]}x{first[1]} "
                                       "in the same batch: add 'AugResizeDim dims=(W,H)' to the augmentation")
        images = np.stack([image for image, _ in samples]).astype(np.float32, copy=False)
        labels = np.stack([mask for _, mask in samples]).astype(np.int64)
        return images, labels

    def load_sample(self, position: int, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """One image (C, H, W) and mask (H, W) after augmentation; randomness from (seed, epoch, dataset index)."""
        image_paths, mask_path = self.pairs[position]
        mask = read_grey(mask_path)
        if mask.dtype != np.uint8 or int(mask.max()) >= self.num_classes:
            raise LumbarsegError(mask_path, f"mask values up to {int(mask.max())}, expected class indices "
                                            f"0..{self.num_classes - 1}")
        steps = self.augmenter.sample(np.random.default_rng([self.seed, epoch, self.indices[position]]))
        channels = []
        for image_path in image_paths:
            image = read_grey(image_path)
            if image.shape != mask.shape:
                raise LumbarsegError(mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its "
                                                f"image {image_path.name} ({image.shape[1]}x{image.shape[0]})")
            if image.dtype == np.uint16:
                image = (image >> 8).astype(np.uint8)
            image, out_mask = apply_steps(image, mask, steps)
            channels.append(image)
        return np.stack(channels), out_mask

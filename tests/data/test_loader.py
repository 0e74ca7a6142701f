"""The portable loader: batch shapes and types, per-(seed, epoch) determinism, drop_last, and its errors."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import yaml

from lumbarseg.data.deephealth_yaml import load_dataset
from lumbarseg.data.loader import SliceLoader
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.slices import write_png

CLASSES = ["background", "vertebra", "disc", "canal"]
SPEC = """SequentialAugmentationContainer
    AugRotate angle=[-15,15]
    AugMirror p=0.5
    AugAdditiveLaplaceNoise std_dev=[1,4]
end"""


def _write_dataset(folder: Path, sizes: List[Tuple[int, int]], training: Optional[List[int]] = None,
                   bit16: bool = False) -> Path:
    """A DeepHealth YAML over synthetic slices; slice i has the constant intensity 10 * (i + 1)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    images = []
    for index, (height, width) in enumerate(sizes):
        value = 10 * (index + 1)
        image = np.full((height, width), value * 257 if bit16 else value, np.uint16 if bit16 else np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[: height // 2, : width // 3] = index % 4
        write_png(folder / "images" / f"s{index}.png", image)
        write_png(folder / "masks" / f"s{index}.png", mask)
        images.append({"location": f"images/s{index}.png", "label": f"masks/s{index}.png"})
    split = {"training": training if training is not None else list(range(len(sizes) - 1)),
             "validation": [len(sizes) - 1]}
    data = {"name": "synthetic", "description": "test", "lumbarseg": {"classes": CLASSES},
            "images": images, "split": split}
    path = folder / "dataset.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def dataset_path(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path / "ds", [(24, 32)] * 11)


def _ids(images: np.ndarray) -> List[int]:
    """Which slices a batch holds, from their constant intensity (without augmentation)."""
    return [round(float(image.max()) * 255 / 10) - 1 for image in images[:, 0]]


def test_batches_have_the_model_shapes_types_and_range(dataset_path):
    loader = SliceLoader(dataset_path, "training", batch_size=4, seed=1)
    batches = list(loader)
    assert len(loader) == len(batches) == 3  # 10 training slices: 4 + 4 + 2
    images, labels = batches[0]
    assert images.shape == (4, 1, 24, 32) and images.dtype == np.float32
    assert labels.shape == (4, 24, 32) and labels.dtype == np.int64
    assert batches[-1][0].shape[0] == 2
    assert images.min() >= 0.0 and images.max() <= 1.0
    seen = sorted(i for batch, _ in batches for i in _ids(batch))
    assert seen == list(range(10))  # every training slice once, validation slice never
    for images, labels in batches:
        for image, label, index in zip(images[:, 0], labels, _ids(images)):
            assert label.max() == index % 4 and image.max() == pytest.approx((index + 1) * 10 / 255)


def test_drop_last_and_no_shuffle(dataset_path):
    loader = SliceLoader(dataset_path, "training", batch_size=4, shuffle=False, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert [_ids(images) for images, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    validation = SliceLoader(dataset_path, "validation", batch_size=4)
    assert len(validation) == 1 and _ids(next(iter(validation))[0]) == [10]


def test_shuffle_is_deterministic_per_seed_and_epoch(dataset_path):
    def order(seed: int, epoch: int) -> List[int]:
        loader = SliceLoader(dataset_path, "training", batch_size=3, seed=seed)
        loader.set_epoch(epoch)
        return [i for images, _ in loader for i in _ids(images)]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(5, 0)
    assert sorted(order(0, 1)) == list(range(10))


def test_augmented_batches_do_not_depend_on_workers_or_prefetch(dataset_path):
    def run(workers: int, prefetch: int, epoch: int = 2) -> List[Tuple[np.ndarray, np.ndarray]]:
        loader = SliceLoader(dataset_path, "training", batch_size=3, augmentation=SPEC, seed=4,
                             workers=workers, prefetch=prefetch)
        loader.set_epoch(epoch)
        return list(loader)

    reference = run(0, 1)
    for workers, prefetch in ((1, 1), (2, 4), (3, 2)):
        for (a_img, a_lab), (b_img, b_lab) in zip(reference, run(workers, prefetch)):
            assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    other_epoch = run(2, 4, epoch=3)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(reference, other_epoch))
    for images, labels in reference:
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert images.dtype == np.float32 and images.max() <= 1.0


def test_augmentation_spec_object_and_16_bit_images(tmp_path):
    path = _write_dataset(tmp_path / "ds", [(16, 16)] * 3, bit16=True)
    loader = SliceLoader(load_dataset(path), "training", batch_size=2, shuffle=False,
                         augmentation="AugResizeDim dims=(8,4)")
    images, labels = next(iter(loader))
    assert images.shape == (2, 1, 4, 8) and labels.shape == (2, 4, 8)
    assert _ids(images) == [0, 1]  # 16-bit 10*257 -> 8-bit 10 (high byte, as ECVL's 8-bit read)


def test_mixed_sizes_in_one_batch_ask_for_resize(tmp_path):
    path = _write_dataset(tmp_path / "ds", [(24, 32), (20, 32), (24, 32)])
    loader = SliceLoader(path, "training", batch_size=2, shuffle=False)
    with pytest.raises(LumbarsegError, match=r"AugResizeDim") as info:
        list(loader)
    assert info.value.source.endswith("s1.png")
    resized = SliceLoader(path, "training", batch_size=2, augmentation="AugResizeDim dims=(16,16)")
    assert next(iter(resized))[0].shape == (2, 1, 16, 16)


def test_bad_inputs_are_named(tmp_path, dataset_path):
    with pytest.raises(LumbarsegError, match="no split 'test'"):
        SliceLoader(dataset_path, "test", batch_size=2)
    with pytest.raises(LumbarsegError, match="batch_size"):
        SliceLoader(dataset_path, "training", batch_size=0)
    with pytest.raises(LumbarsegError, match="unknown augmentation 'AugWarp'"):
        SliceLoader(dataset_path, "training", batch_size=2, augmentation="AugWarp")
    empty = _write_dataset(tmp_path / "empty", [(8, 8)] * 2, training=[])
    with pytest.raises(LumbarsegError, match="empty"):
        SliceLoader(empty, "training", batch_size=2)
    # a mask with raw values (not class indices), a missing image, and an image/mask size mismatch
    root = dataset_path.parent
    write_png(root / "masks" / "s0.png", np.full((24, 32), 76, np.uint8))
    (root / "images" / "s1.png").unlink()
    write_png(root / "masks" / "s2.png", np.zeros((12, 32), np.uint8))
    loader = SliceLoader(dataset_path, "training", batch_size=1, shuffle=False, workers=2)
    for position, message in ((0, "class indices 0..3"), (1, "no such file"), (2, "differs from its image")):
        with pytest.raises(LumbarsegError, match=message):
            loader.load_batch([position], 0)
    with pytest.raises(LumbarsegError, match="class indices"):
        list(loader)  # errors in worker threads reach the caller

"""A YAML written by lumbarseg loads in the real pyecvl DLDataset with the expected shapes and values."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_synth import make_slices

from lumbarseg.data.builders import from_slices
from lumbarseg.io.slices import read_grey
from lumbarseg.labels import LabelMap

pytest.importorskip("pyeddl", reason="pyeddl not installed (DeepHealth extra: pip install lumbarseg[eddl])")
ecvl = pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed (DeepHealth extra: pip install lumbarseg[eddl])")


def test_dldataset_reads_lumbarseg_yaml(tmp_path):
    from pyeddl.tensor import Tensor

    images, masks = make_slices(tmp_path / "in", {"1": 2, "2": 2, "3": 2}, shape=(24, 20))
    ds = from_slices(images, masks, tmp_path / "ds.yml", LabelMap.load("spider-png"), progress=False)
    assert list(ds.split) == ["training", "validation", "test"]

    # One entry per split. ECVL 1.0.3's DLDataset needs at least one real augmentation (all-None or an empty
    # list fails in LoadBatch); AugToFloat32(1, 1) keeps values and size (checked against the C++ library).
    keep = ecvl.SequentialAugmentationContainer([ecvl.AugToFloat32(1.0, 1.0)])
    augs = ecvl.DatasetAugmentations([keep, None, None])
    loader = ecvl.DLDataset(str(tmp_path / "ds.yml"), 2, augs, ecvl.ColorType.GRAY, ecvl.ColorType.GRAY)
    assert loader.n_channels_ == 1 and loader.n_channels_gt_ == 1
    assert list(loader.resize_dims_) == [24, 20]  # (H, W)
    for split in ("training", "validation", "test"):
        loader.SetSplit(getattr(ecvl.SplitType, split))
        loader.ResetBatch(getattr(ecvl.SplitType, split), False)
        x, y = Tensor([2, 1, 24, 20]), Tensor([2, 1, 24, 20])
        loader.LoadBatch(x, y)
        x_np, y_np = np.array(x.getdata()), np.array(y.getdata())
        for i, (image_path, mask_path) in enumerate(ds.pairs(split)):
            np.testing.assert_array_equal(x_np[i, 0], read_grey(image_path))  # grey, 0..255
            np.testing.assert_array_equal(y_np[i, 0], read_grey(mask_path))  # class indices 0..3
        assert set(np.unique(y_np)) <= {0, 1, 2, 3}

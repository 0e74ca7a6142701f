"""The experiment config's model section is the U-Net spec itself, less the classes (from the dataset)."""
from __future__ import annotations

import pytest
import yaml

from lumbarseg.config import config_from_dict, load_config
from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import UNetSpec


def test_model_section_is_the_spec_and_classes_come_from_the_dataset():
    config = config_from_dict({"model": {"depth": 2, "base_filters": 8, "dropout": 0.1}})
    assert isinstance(config.model, UNetSpec)
    spec = config.with_classes(["background", "a", "b"], "dataset").spec()
    assert spec == UNetSpec(num_classes=3, depth=2, base_filters=8, dropout=0.1)
    assert "num_classes" not in yaml.safe_load(config.to_yaml())["model"]
    with pytest.raises(LumbarsegError, match="unknown key model.num_classes"):
        config_from_dict({"model": {"num_classes": 3}})
    with pytest.raises(LumbarsegError, match="model.norm: unknown normalisation"):
        config_from_dict({"model": {"norm": "group"}})


def test_written_config_reads_back_the_same(tmp_path):
    config = config_from_dict({"model": {"depth": 3}, "optimizer": {"name": "sgd"}}).with_classes(
        ["background", "x"], "dataset")
    path = tmp_path / "config.yml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config

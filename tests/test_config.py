"""The experiment config's model section is the U-Net spec itself, less the classes (from the dataset)."""
from __future__ import annotations

import pytest
import yaml

from lumbarseg.config import config_from_dict, load_config
from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import UNetSpec

# the accurate model's stages, in the order `make model` trains them
RECIPES_ACCURATE = ["unet_spider_accurate.yml", "unet_spider_accurate_finetune.yml", "unet_spider_accurate_25d.yml"]


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


def test_every_shipped_recipe_loads_and_matches_its_model():
    """The recipes `make model` and configs/experiments/ name load, and each shipped model's recipe has the
    architecture and spacing of the file it reproduces: its last stage exactly, earlier stages up to their
    input channels (a one-channel stage is inflated into a 2.5D one by `--init`)."""
    from dataclasses import replace
    from pathlib import Path

    from lumbarseg.model import metadata
    from lumbarseg.model.registry import resolve_model

    configs = Path(__file__).resolve().parents[1] / "configs"
    recipes = sorted(configs.glob("*.yml")) + sorted((configs / "experiments").glob("*.yml"))
    assert len(recipes) >= 6
    loaded = {path.name: load_config(path) for path in recipes}
    shipped = {"fast": ["unet_spider.yml"], "accurate": RECIPES_ACCURATE}
    for name, files in shipped.items():
        meta = metadata.read(resolve_model(name))
        for file in files:
            spec = loaded[file].with_classes(meta.classes, "model").spec()
            if file != files[-1] and spec.in_channels == 1:
                spec = replace(spec, in_channels=meta.spec.in_channels)
            assert spec.to_dict() == meta.spec.to_dict(), (name, file)
            assert list(loaded[file].spacing) == list(meta.spacing), (name, file)


def test_makefile_runs_the_accurate_stages_in_order():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    positions = [makefile.index(f"configs/{file}") for file in RECIPES_ACCURATE]
    assert positions == sorted(positions)

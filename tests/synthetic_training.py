"""Tiny synthetic segmentation datasets (PNG slices + DeepHealth YAML) and configs for the training tests."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from lumbarseg.config import ExperimentConfig, load_config
from lumbarseg.data.deephealth_yaml import DeepHealthDataset, Sample, write_dataset
from lumbarseg.io.slices import write_png

CLASSES = ["background", "vertebra", "disc", "canal"]
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yml"


def make_dataset(folder: Path, n_train: int = 6, n_val: int = 2, size: int = 32, classes: Sequence[str] = CLASSES,
                 splits: Optional[Dict[str, List[int]]] = None, seed: int = 0, per_patient: int = 0) -> Path:
    """Slices with a bright block (class 1), a mid-grey block (2) and a thin dark-on-grey bar (3); returns the YAML.

    ``per_patient``: also record features ``patient`` and ``slice``, that many consecutive slices per patient
    (what 2.5D datasets need)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n_train + n_val):
        image = rng.integers(0, 40, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for c in range(1, len(classes)):
            r, q = rng.integers(0, size - 10, 2)
            mask[r:r + 8, q:q + 6 + 2 * c] = c
        for c, value in zip(range(1, len(classes)), (220, 140, 90)):
            image[mask == c] = value
        write_png(folder / "images" / f"s{i}.png", image)
        write_png(folder / "masks" / f"s{i}.png", mask)
        values = [f"p{i // per_patient}", 10 + i % per_patient] if per_patient else None
        samples.append(Sample([f"images/s{i}.png"], f"masks/s{i}.png", values))
    if splits is None:
        splits = {"training": list(range(n_train)), "validation": list(range(n_train, n_train + n_val))}
    dataset = DeepHealthDataset("synthetic", "synthetic test slices", folder, samples, splits,
                                features=["patient", "slice"] if per_patient else [],
                                meta={"classes": list(classes), "spacing": [1.0, 1.0], "slice_spacing": 2.5})
    path = folder / "dataset.yml"
    write_dataset(dataset, path)
    return path


def tiny_config(**overrides: object) -> ExperimentConfig:
    """configs/tiny.yml with dotted-key overrides."""
    return load_config(TINY_CONFIG, overrides)

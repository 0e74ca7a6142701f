"""Validate a dataset's content, not just its structure, and summarise it.

Problems (each one line, ``SOURCE: PROBLEM``) make a dataset unusable: a missing or undecodable
file, image/mask size mismatch, mask values outside the class list, a split that is present but
empty, an image in two splits, a patient in two splits, and with ``strict`` a location escaping
the dataset folder. Warnings do not: a standard split that is absent (a split that would get no
patient is not written), images that are in no split, or an absolute location with a relative
label (ECVL then leaves the label unresolved).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from lumbarseg.data.deephealth_yaml import (
    META_KEY,
    DeepHealthDataset,
    escaping_locations,
    load_dataset,
)
from lumbarseg.data.split import SPLITS
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.slices import read_grey

PathLike = Union[str, Path]


@dataclass
class CheckReport:
    """What ``check_dataset`` found: problems, warnings, and the figures of the summary."""

    dataset: DeepHealthDataset
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    patients: Dict[str, List[str]] = field(default_factory=dict)  # split -> patient ids
    slices: Dict[str, int] = field(default_factory=dict)  # split -> images
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    class_pixels: Optional[np.ndarray] = None  # pixels per class index over all masks

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def class_fractions(self) -> Dict[str, float]:
        if self.class_pixels is None or not self.class_pixels.sum():
            return {}
        total = float(self.class_pixels.sum())
        return {name: float(n) / total for name, n in zip(self.dataset.classes, self.class_pixels)}

    def summary(self) -> str:
        ds = self.dataset
        lines = [f"dataset: {ds.name} ({ds.where}), {len(ds.samples)} images"]
        if self.dataset.meta.get("classes"):
            lines.append(f"classes: {', '.join(ds.classes)}")
        lines.append(f"{'split':<12}{'patients':>10}{'slices':>10}")
        for name in ds.split:
            lines.append(f"{name:<12}{len(self.patients.get(name, [])):>10}{self.slices.get(name, 0):>10}")
        all_patients = {ds.patient(i) for i in range(len(ds.samples))}
        lines.append(f"{'all':<12}{len(all_patients):>10}{len(ds.samples):>10}")
        if self.sizes:
            shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common())
            lines.append(f"image size (WxH): {shown}")
        spacing = ds.spacing
        lines.append("spacing (row, col): " + (f"{spacing[0]:g} x {spacing[1]:g} mm" if spacing else "unknown"))
        fractions = self.class_fractions
        if fractions:
            lines.append("class pixel fractions: " + ", ".join(f"{k} {v:.4f}" for k, v in fractions.items()))
        return "\n".join(lines)


def check_file(path: PathLike, strict: bool = False, progress: bool = True) -> CheckReport:
    """Check a dataset YAML and every file it names: `lumbarseg dataset check`.

    Args:
        path: the dataset YAML.
        strict: also report locations outside the dataset's folder (absolute or `..`).
        progress: show a progress bar on stderr.

    Returns:
        The `CheckReport`: all problems and warnings found, counts per split, image sizes, class pixel
            fractions (`summary()` prints them).

    Raises:
        LumbarsegError: a YAML whose structure cannot be read at all.
    """
    return check_dataset(load_dataset(path, strict=False), strict=strict, progress=progress)


def check_dataset(dataset: DeepHealthDataset, strict: bool = False, progress: bool = True) -> CheckReport:
    """Check every split and every image/mask pair; collects all problems rather than stopping."""
    report = CheckReport(dataset)
    where = dataset.where
    if strict:
        report.problems += [f"{where}: {p}" for p in escaping_locations(dataset)]
    num_classes = _num_classes(dataset, report)
    _check_splits(dataset, report)
    for index, sample in enumerate(dataset.samples):
        if sample.label and Path(sample.location[0]).is_absolute() and not Path(sample.label).is_absolute():
            report.warnings.append(f"{where}: images[{index}]: absolute location with a relative label; ECVL "
                                   "resolves the label only when the location is relative")
    in_split = {i for indices in dataset.split.values() for i in indices}
    unused = len(dataset.samples) - len(in_split)
    if unused:
        report.warnings.append(f"{where}: {unused} images are in no split")
    pixels = np.zeros(max(num_classes or 0, 1), dtype=np.int64)
    for index in tqdm(range(len(dataset.samples)), unit="image", desc="check", disable=None if progress else True):
        counts = _check_sample(dataset, index, num_classes, report)
        if counts is not None and num_classes:
            pixels += counts
    report.class_pixels = pixels if num_classes else None
    return report


def _num_classes(dataset: DeepHealthDataset, report: CheckReport) -> Optional[int]:
    try:
        return dataset.label_map.num_classes
    except LumbarsegError as exc:
        problem = exc.problem if exc.source == dataset.where else str(exc)
        report.problems.append(f"{dataset.where}: {problem} (cannot check mask values)")
        return None


def _check_splits(dataset: DeepHealthDataset, report: CheckReport) -> None:
    where = dataset.where
    if not dataset.split:
        report.problems.append(f"{where}: no 'split' (training/validation/test image indices)")
        return
    for name in SPLITS:
        if name not in dataset.split:
            report.warnings.append(f"{where}: no {name!r} split")
    members: Dict[str, set] = {}
    for name, indices in dataset.split.items():
        report.slices[name] = len(indices)
        report.patients[name] = sorted({dataset.patient(i) for i in indices})
        members[name] = set(indices)
        if not indices:
            report.problems.append(f"{where}: split {name!r} is empty")
        duplicates = sorted(i for i, n in Counter(indices).items() if n > 1)
        if duplicates:
            report.problems.append(f"{where}: split {name!r} lists images more than once (indices {_few(duplicates)})")
    for a, b in combinations(dataset.split, 2):
        shared = sorted(members[a] & members[b])
        if shared:
            report.problems.append(f"{where}: splits {a!r} and {b!r} share {len(shared)} image(s) "
                                   f"(indices {_few(shared)})")
        shared_patients = sorted(set(report.patients[a]) & set(report.patients[b]))
        if shared_patients:
            report.problems.append(f"{where}: patients in both {a!r} and {b!r}: {_few(shared_patients)}")


def _few(items: List, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _read(path: Path, report: CheckReport) -> Optional[np.ndarray]:
    try:
        return read_grey(path)
    except LumbarsegError as exc:
        report.problems.append(str(exc))
        return None


def _check_sample(dataset: DeepHealthDataset, index: int, num_classes: Optional[int],
                  report: CheckReport) -> Optional[np.ndarray]:
    paths = dataset.image_paths(index)
    images = [_read(p, report) for p in paths]
    label_path = dataset.label_path(index)
    if label_path is None:
        report.problems.append(f"{dataset.where}: images[{index}] ({dataset.samples[index].location[0]}): "
                               "no label (mask) path")
        return None
    mask = _read(label_path, report)
    shapes = [im.shape for im in images if im is not None]
    if shapes:
        report.sizes[(shapes[0][1], shapes[0][0])] += 1
    for path, shape in zip(paths[1:], shapes[1:]):
        if shape != shapes[0]:
            report.problems.append(f"{path}: channel size {_wxh(shape)} differs from {_wxh(shapes[0])}")
    if mask is None:
        return None
    if shapes and mask.shape != shapes[0]:
        report.problems.append(f"{label_path}: mask size {_wxh(mask.shape)} differs from image "
                               f"{dataset.samples[index].location[0]} {_wxh(shapes[0])}")
    if num_classes is None:
        return None
    bad = np.unique(mask[mask >= num_classes])
    if bad.size:
        report.problems.append(f"{label_path}: mask values {_few(bad.tolist())} are not class indices "
                               f"0..{num_classes - 1} ({', '.join(dataset.classes)}; see '{META_KEY}: classes')")
        return None
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]


def _wxh(shape: Tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} (WxH)"

"""The DeepHealth Dataset YAML, read and written exactly as ECVL's parser (``dataset_parser.cpp``) reads it.

ECVL reads the top-level keys ``name``, ``description``, ``classes``, ``features``, ``images`` and
``split`` and ignores every other key, so lumbarseg keeps its own information under one extra
top-level key, ``lumbarseg`` (class names, the raw label map the masks were converted with,
colours, spacing, normalisation, orientation, source geometry). Per-sample facts that DeepHealth
tools may want too (patient id, slice index, source file) are ECVL ``features``/``values``.

Segmentation datasets never carry ``classes``: ECVL treats a YAML with ``classes`` as
classification. A leading ``%YAML:1.2`` line (ECVL's own example has one; PyYAML rejects it) is
tolerated on read; lumbarseg does not write it, since yaml-cpp does not need it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import write_text
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]

META_KEY = "lumbarseg"
META_VERSION = 1
# Per-sample features written by lumbarseg's builders (ECVL ``values``, in this order).
FEATURE_PATIENT = "patient"
FEATURE_SLICE = "slice"
FEATURE_SOURCE = "source"

_DIRECTIVE = re.compile(r"\A[ \t]*%YAML\b[^\n]*")
_URL = re.compile(r"^https?://", re.IGNORECASE)


@dataclass
class Sample:
    """One ``images`` entry: location(s) relative to the YAML folder, optional mask path and values."""

    location: List[str]
    label: Optional[str] = None
    values: Optional[Union[List[Any], Dict[str, Any]]] = None


@dataclass
class DeepHealthDataset:
    """A segmentation dataset in DeepHealth YAML form.

    Attributes:
        name: the dataset's name.
        description: its description.
        root: the folder its locations are relative to (the YAML's).
        samples: one entry per image: location(s) (several = channels), label (mask path), values.
        split: split name -> sample indices.
        features: the names of the samples' values (lumbarseg writes `patient`, `slice`, `source`).
        meta: lumbarseg's own key (`lumbarseg:`): classes, label map, colours, spacing, split recipe, ...
        source: the YAML file it was read from.
    """

    name: str
    description: str
    root: Path
    samples: List[Sample]
    split: Dict[str, List[int]]
    features: List[str] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)
    source: Optional[Path] = None  # the YAML file it was loaded from (for error messages)

    @property
    def where(self) -> str:
        return str(self.source) if self.source is not None else f"dataset {self.name!r}"

    @property
    def classes(self) -> List[str]:
        """Class names, background first (index = value in the class-index masks)."""
        classes = self.meta.get("classes")
        if not classes:
            raise LumbarsegError(self.where, f"no class names ({META_KEY}.classes); build it with lumbarseg dataset")
        return [str(c) for c in classes]

    @property
    def label_map(self) -> LabelMap:
        """The class-index label map of the masks (raw value = class index)."""
        return LabelMap.from_classes(self.classes)

    @property
    def spacing(self) -> Optional[Tuple[float, float]]:
        """In-plane (row, col) spacing in mm of the slices, if known."""
        spacing = self.meta.get("spacing")
        if not spacing:
            return None
        return (float(spacing[0]), float(spacing[1]))

    def split_indices(self, split: str) -> List[int]:
        if split not in self.split:
            known = ", ".join(self.split) or "none"
            raise LumbarsegError(self.where, f"no split {split!r} (splits: {known})")
        return list(self.split[split])

    def image_paths(self, index: int) -> List[Path]:
        """Absolute path(s) of a sample's image (several = channels)."""
        return [self.root / loc for loc in self.samples[index].location]

    def label_path(self, index: int) -> Optional[Path]:
        label = self.samples[index].label
        return self.root / label if label is not None else None

    @property
    def slice_channels(self) -> List[int]:
        """Each input channel's slice offset from the sample's slice (2.5D input; ``[0]``: the slice alone).
        Written by :func:`lumbarseg.data.context.with_slice_channels`; ``location`` lists the slices in this order."""
        offsets = self.meta.get("slice_channels") or [0]
        if (not isinstance(offsets, list) or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or offsets.count(0) != 1):
            raise LumbarsegError(self.where, f"{META_KEY}.slice_channels must be a list of slice offsets (integers) "
                                             f"holding 0 once, got {offsets!r}")
        return list(offsets)

    def channel_pairs(self, split: str) -> List[Tuple[List[Path], Path]]:
        """Absolute ``([channel images], mask)`` paths of a split, in split order; channels as ``slice_channels``."""
        channels = len(self.slice_channels)
        out = []
        for index in self.split_indices(split):
            sample = self.samples[index]
            if len(sample.location) != channels:
                raise LumbarsegError(self.where, f"images[{index}]: {len(sample.location)} channel locations, but "
                                                 f"{META_KEY}.slice_channels names {channels}")
            if sample.label is None:
                raise LumbarsegError(self.where, f"images[{index}] ({sample.location[0]}): no label (mask) path")
            out.append(([self.root / loc for loc in sample.location], self.root / sample.label))
        return out

    def pairs(self, split: str) -> List[Tuple[Path, Path]]:
        """Absolute ``(image, mask)`` paths of a split, in split order; the image is the sample's own slice
        (the centre channel of a 2.5D dataset)."""
        centre = self.slice_channels.index(0)
        return [(images[centre], mask) for images, mask in self.channel_pairs(split)]

    def value(self, index: int, feature: str) -> Optional[Any]:
        """A sample's value of a feature, or None."""
        values = self.samples[index].values
        if isinstance(values, dict):
            return values.get(feature)
        if isinstance(values, list) and feature in self.features:
            position = self.features.index(feature)
            return values[position] if position < len(values) else None
        return None

    def patient(self, index: int) -> str:
        """The sample's patient id (feature ``patient``); without it each image is its own patient."""
        value = self.value(index, FEATURE_PATIENT)
        if value is None:
            return PurePosixPath(self.samples[index].location[0]).stem
        return str(value)

    def slice_index(self, index: int) -> Optional[int]:
        value = self.value(index, FEATURE_SLICE)
        return int(value) if value is not None else None


# --- reading ---------------------------------------------------------------------------------------


def load_dataset(path: PathLike, strict: bool = False) -> DeepHealthDataset:
    """Read a DeepHealth Dataset YAML and check its structure (not the files it names: see `check_file`).

    Args:
        path: the YAML file; a leading `%YAML:1.2` line (ECVL's examples) is accepted.
        strict: also reject locations that escape the YAML's folder (absolute or `..`).

    Returns:
        The dataset.

    Raises:
        LumbarsegError: malformed YAML, a `classes` key (classification), out-of-range split indices, ...
    """
    path = Path(path)
    if not path.is_file():
        raise LumbarsegError(path, "no such dataset file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LumbarsegError(path, f"cannot read dataset file ({exc.__class__.__name__})") from None
    data = _parse_yaml(text, path)
    dataset = dataset_from_dict(data, path.resolve().parent, source=path)
    if strict:
        escaping = escaping_locations(dataset)
        if escaping:
            raise LumbarsegError(path, escaping[0])
    return dataset


def _parse_yaml(text: str, path: Path) -> Any:
    text = _DIRECTIVE.sub("", text, count=1)  # only a first-line directive; line numbers are kept
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LumbarsegError(path, f"malformed YAML: {where}{problem}") from None


def dataset_from_dict(data: Any, root: Path, source: Optional[Path] = None) -> DeepHealthDataset:
    """Validate the parsed YAML the way ECVL would read it (plus what lumbarseg needs)."""
    where = str(source) if source is not None else "dataset"
    if not isinstance(data, dict):
        raise LumbarsegError(where, "not a DeepHealth dataset (expected a mapping with 'images')")
    if "classes" in data:
        raise LumbarsegError(where, "has 'classes', which makes it a classification dataset for ECVL; "
                                    "segmentation datasets have mask paths as labels and no 'classes'")
    if "images" not in data:
        raise LumbarsegError(where, "missing 'images'")
    for key in ("name", "description"):
        if data.get(key) is not None and not isinstance(data[key], (str, int, float)):
            raise LumbarsegError(where, f"'{key}' must be a string")
    features = data.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise LumbarsegError(where, "'features' must be a list of names")
    images = data["images"]
    if not isinstance(images, list) or not images:
        raise LumbarsegError(where, "'images' must be a non-empty list")
    samples = [_parse_sample(entry, i, where) for i, entry in enumerate(images)]
    split = _parse_split(data.get("split"), len(samples), where)
    meta = data.get(META_KEY) or {}
    if not isinstance(meta, dict):
        raise LumbarsegError(where, f"'{META_KEY}' must be a mapping")
    return DeepHealthDataset(
        name=str(data.get("name") or ""),
        description=str(data.get("description") or ""),
        root=Path(root),
        samples=samples,
        split=split,
        features=list(features),
        meta=meta,
        source=source,
    )


def _location_list(value: Any, entry: str) -> List[str]:
    if isinstance(value, str) and value:
        locations = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        locations = list(value)
    else:
        raise LumbarsegError(entry, "location must be a path or a non-empty list of paths")
    for loc in locations:
        if _URL.match(loc):
            raise LumbarsegError(entry, f"remote location {loc!r} is not supported (download it first)")
    return locations


def _parse_sample(entry: Any, index: int, where: str) -> Sample:
    name = f"{where}: images[{index}]"
    if not isinstance(entry, dict):
        return Sample(_location_list(entry, name))
    unknown = set(entry) - {"location", "label", "values"}
    if unknown:
        raise LumbarsegError(name, f"unknown keys {sorted(unknown)} (expected location, label, values)")
    if "location" not in entry:
        raise LumbarsegError(name, "missing 'location'")
    label = entry.get("label")
    if label is not None and (not isinstance(label, str) or not label or _looks_like_int(label)):
        raise LumbarsegError(name, f"label {label!r} is not a mask path (class labels mean classification)")
    if label is not None and _URL.match(label):
        raise LumbarsegError(name, f"remote label {label!r} is not supported (download it first)")
    values = entry.get("values")
    if values is not None and not isinstance(values, (list, dict)):
        raise LumbarsegError(name, "values must be a list (in 'features' order) or a mapping")
    return Sample(_location_list(entry["location"], name), label, values)


def _looks_like_int(text: str) -> bool:
    # ECVL first tries a label as an int: a mask path like "12" would silently become class 12.
    return bool(re.fullmatch(r"\s*[-+]?\d+\s*", text))


def _parse_split(split: Any, count: int, where: str) -> Dict[str, List[int]]:
    if split is None:
        return {}
    if not isinstance(split, dict):
        raise LumbarsegError(where, "'split' must map split names to lists of image indices")
    out: Dict[str, List[int]] = {}
    for name, indices in split.items():
        entry = f"{where}: split {name!r}"
        if indices is None:
            indices = []
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise LumbarsegError(entry, "must be a list of 0-based image indices")
        bad = [i for i in indices if i < 0 or i >= count]
        if bad:
            raise LumbarsegError(entry, f"index {bad[0]} out of range (the dataset has {count} images)")
        out[str(name)] = list(indices)
    return out


def escaping_locations(dataset: DeepHealthDataset) -> List[str]:
    """One message per location or label that is absolute or resolves outside the dataset folder."""
    problems = []
    root = os.path.normpath(str(dataset.root.resolve()))
    for index, sample in enumerate(dataset.samples):
        paths = list(sample.location) + ([sample.label] if sample.label else [])
        for loc in paths:
            if os.path.isabs(loc) or PurePosixPath(loc).is_absolute():
                problems.append(f"images[{index}]: location {loc!r} is absolute (escapes the dataset folder)")
                continue
            resolved = os.path.normpath(os.path.realpath(os.path.join(root, loc)))
            if os.path.commonpath([root, resolved]) != root:
                problems.append(f"images[{index}]: location {loc!r} escapes the dataset folder")
    return problems


# --- writing ---------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style for the structure, flow style for short lists of scalars (indices, values)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def dataset_to_dict(dataset: DeepHealthDataset) -> Dict[str, Any]:
    """The YAML mapping, keys in ECVL's order, with ``lumbarseg`` before ``images`` for readers."""
    data: Dict[str, Any] = {"name": dataset.name, "description": dataset.description}
    if dataset.features:
        data["features"] = list(dataset.features)
    if dataset.meta:
        data[META_KEY] = dataset.meta
    images = []
    for sample in dataset.samples:
        entry: Dict[str, Any] = {"location": sample.location[0] if len(sample.location) == 1 else sample.location}
        if sample.label is not None:
            entry["label"] = sample.label
        if sample.values is not None:
            entry["values"] = sample.values
        images.append(entry)
    data["images"] = images
    if dataset.split:
        data["split"] = {name: list(indices) for name, indices in dataset.split.items()}
    return data


def dump_dataset(dataset: DeepHealthDataset) -> str:
    header = f"# DeepHealth Dataset (ECVL) written by lumbarseg; '{META_KEY}' is ignored by ECVL.\n"
    body = yaml.dump(dataset_to_dict(dataset), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)
    return header + body


def write_dataset(dataset: DeepHealthDataset, path: PathLike, overwrite: bool = True) -> None:
    """Write the YAML atomically (locations stay relative to the YAML's folder); an existing file only with
    ``overwrite`` (the rename is exclusive without it)."""
    dataset_from_dict(dataset_to_dict(dataset), dataset.root)  # never write what we could not read back
    write_text(path, dump_dataset(dataset), overwrite)

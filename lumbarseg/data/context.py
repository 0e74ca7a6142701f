"""2.5D datasets: each sample's neighbouring slices of the same patient as extra input channels.

ECVL's ``DLDataset`` stacks a sample's ``location`` list as its channels, so a 2.5D dataset is a
DeepHealth YAML whose ``location`` lists the slices at fixed offsets from the sample's own slice (the
mask stays the sample's). Offsets past the patient's first or last slice repeat that edge slice, as
``predict`` does at a volume's edges. The offsets are recorded as ``lumbarseg.slice_channels``; the
model records them in millimetres (``slice_offsets``), so ``predict`` can interpolate neighbours on a
grid of another slice spacing.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Union

from lumbarseg.data.deephealth_yaml import META_KEY, DeepHealthDataset, Sample, load_dataset, write_dataset
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import exists_error
from lumbarseg.io.paths import check_not_input

PathLike = Union[str, Path]

MAX_CHANNELS = 9


def parse_offsets(text: str) -> List[int]:
    """``"-2,0,2"`` -> ``[-2, 0, 2]``: integer slice offsets, 0 once, at most :data:`MAX_CHANNELS`."""
    try:
        offsets = [int(part) for part in text.split(",")]
    except ValueError:
        raise LumbarsegError("--slices", f"need comma-separated integer slice offsets, got {text!r}") from None
    if offsets.count(0) != 1 or len(set(offsets)) != len(offsets) or len(offsets) > MAX_CHANNELS:
        raise LumbarsegError("--slices", f"need distinct offsets holding 0 once, at most {MAX_CHANNELS}, got {text!r}")
    return offsets


def with_slice_channels(dataset: DeepHealthDataset, offsets: Sequence[int], root: Path) -> DeepHealthDataset:
    """The dataset with each sample's channels the slices at ``offsets`` (locations relative to ``root``).

    Needs the per-sample features ``patient`` and ``slice`` that ``lumbarseg dataset`` builders write.
    """
    if dataset.meta.get("slice_channels") not in (None, [0]):
        raise LumbarsegError(dataset.where, "already has slice channels; start from the single-channel dataset")
    if not dataset.meta.get("slice_spacing"):
        raise LumbarsegError(dataset.where, f"no slice spacing ({META_KEY}.slice_spacing): the model could not "
                                            "place its neighbour slices in millimetres")
    by_patient: Dict[str, Dict[int, int]] = defaultdict(dict)
    for index, sample in enumerate(dataset.samples):
        number = dataset.slice_index(index)
        if number is None:
            raise LumbarsegError(dataset.where, f"images[{index}] ({sample.location[0]}): no 'slice' feature")
        if len(sample.location) != 1:
            raise LumbarsegError(dataset.where, f"images[{index}]: has {len(sample.location)} locations already")
        by_patient[dataset.patient(index)][number] = index
    samples = []
    for index, sample in enumerate(dataset.samples):
        slices = by_patient[dataset.patient(index)]
        first, last, own = min(slices), max(slices), dataset.slice_index(index)
        locations = []
        for offset in offsets:
            wanted = min(max(own + offset, first), last)  # type: ignore[operator]
            if wanted not in slices:
                raise LumbarsegError(dataset.where, f"patient {dataset.patient(index)} has no slice {wanted} "
                                                    "(its slices must be contiguous)")
            locations.append(_relative(dataset.root / dataset.samples[slices[wanted]].location[0], root))
        label = _relative(dataset.root / sample.label, root) if sample.label else None
        samples.append(Sample(locations, label, sample.values))
    meta = dict(dataset.meta, slice_channels=[int(o) for o in offsets])
    return replace(dataset, root=root, samples=samples, meta=meta, source=None)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def write_with_slice_channels(source: PathLike, output: PathLike, offsets: Sequence[int],
                              overwrite: bool = False) -> DeepHealthDataset:
    """Write the 2.5D form of a dataset: each sample's neighbouring slices as its channels.

    Args:
        source: the dataset YAML to read (never replaced).
        output: the YAML to write; beside `source` is best, since the slice files are shared, not copied.
        offsets: slice offsets, one per channel, holding 0 once (e.g. `[-2, 0, 2]`); at most 9.
        overwrite: replace an existing `output`.

    Returns:
        The dataset as written.
    """
    source, output = Path(source), Path(output)
    dataset = load_dataset(source)
    check_not_input(output, [("dataset", source)])
    if output.exists() and not overwrite:
        raise exists_error(output)
    result = with_slice_channels(dataset, offsets, output.resolve().parent)
    write_dataset(result, output, overwrite)
    return replace(result, source=output)

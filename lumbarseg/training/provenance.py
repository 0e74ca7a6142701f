"""What a run's model files record about their data and training: the metadata of the ONNX contract (classes,
colours, spacing at the network's input size, normalisation, slice offsets of 2.5D input) and the training record,
with the world (launcher, processes, hosts, devices, batch per rank) each stretch of epochs was trained in."""
from __future__ import annotations

import socket
from dataclasses import asdict, replace
from typing import Any, Dict, List, Sequence

import numpy as np

from lumbarseg.config import ExperimentConfig, sized_augmentation
from lumbarseg.data.deephealth_yaml import DeepHealthDataset
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.intensity import DEFAULT_NORMALIZATION
from lumbarseg.io.slices import read_grey
from lumbarseg.model import metadata as model_metadata
from lumbarseg.model.record import epochs_of, short_world
from lumbarseg.networks.unet import UNetSpec
from lumbarseg.training.distributed import Replica, World, my_part


def base_metadata(ds: DeepHealthDataset, config: ExperimentConfig, spec: UNetSpec,
                  engine: str) -> model_metadata.ModelMetadata:
    """The metadata a run's models carry, before training adds its record (:func:`with_training_record`)."""
    classes = list(ds.classes)
    colours = ds.meta.get("colors") or {}
    defaults = dict(zip(ds.label_map.classes, ds.label_map.colors))
    colors = [list(colours.get(name, defaults[name])) for name in classes]
    return model_metadata.ModelMetadata(
        classes=classes, colors=colors, architecture=spec.to_dict(), spacing=list(_spacing(ds, config)),
        input_size=list(config.input_size), normalization=dict(ds.meta.get("normalization") or DEFAULT_NORMALIZATION),
        training_data=_training_data(ds, config), engine=engine, slice_offsets=slice_offsets(ds))


def _training_data(ds: DeepHealthDataset, config: ExperimentConfig) -> Dict[str, Any]:
    """The dataset's record in the model; ``slice_spacing`` (mm) is what ``predict`` assumes for PNG slices,
    ``flips`` the flips the model was trained with (``predict --tta`` uses only those)."""
    names = {node.name for node in sized_augmentation(config, "training").walk()}
    record: Dict[str, Any] = {"dataset": ds.name, "description": ds.description,
                              "slices": {split: len(ds.split.get(split, [])) for split in ("training", "validation")},
                              "flips": sorted(names & {"AugMirror", "AugFlip"})}
    if ds.meta.get("slice_spacing"):
        record["slice_spacing"] = float(ds.meta["slice_spacing"])
    return record


def _spacing(ds: DeepHealthDataset, config: ExperimentConfig) -> Sequence[float]:
    """mm per pixel at ``input_size``: the config's, or the dataset's scaled by the resize."""
    if config.spacing is not None:
        return config.spacing
    if ds.spacing is None:
        raise LumbarsegError(ds.where, "in-plane spacing unknown: give the slices' pixel spacing with train "
                                       "--spacing ROW,COL (or dataset from-slices --spacing)")
    return scaled_spacing(ds, ds.spacing, config)


def scaled_spacing(ds: DeepHealthDataset, spacing: Sequence[float], config: ExperimentConfig) -> Sequence[float]:
    """The slices' pixel spacing scaled by the resize to ``input_size``."""
    values = [float(v) for v in spacing]
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise LumbarsegError("--spacing", f"need ROW,COL positive millimetres, got {list(spacing)}")
    image = read_grey(ds.pairs("training")[0][0])
    return tuple(round(s * n / m, 6) for s, n, m in zip(values, image.shape, config.input_size))


def with_training_record(meta: model_metadata.ModelMetadata, config: ExperimentConfig,
                         state: Dict[str, Any]) -> model_metadata.ModelMetadata:
    """``meta`` with the run's progress: epochs, best epoch and its Dice, seed, optimiser."""
    record = dict(meta.training_data)
    record.update({"epochs": state["epoch"], "best_epoch": state["best_epoch"],
                   "validation_mean_dice": round(state["best_dice"], 6), "seed": config.seed,
                   "optimizer": asdict(config.optimizer), "worlds": state.get("worlds", [])})
    return replace(meta, training_data=record)


# --- the world a run trains in ----------------------------------------------------------------

_SEGMENT = ("first_epoch", "last_epoch")  # a world record's epochs; the rest says how they were trained


def world_record(replica: Replica, device: Any, batch_size: int) -> Dict[str, Any]:
    """This run's world, the same on every rank (each rank's host name and device are gathered): launcher
    (none, torchrun, mpirun or srun), world size, nodes (host names in rank order) and ranks per node, device per
    rank, backend, global batch and each rank's part of it, and the BatchNorm mode (global or local)."""
    world = replica.world
    ranks = replica.gather([socket.gethostname(), str(device)])
    nodes = list(dict.fromkeys(host for host, _ in ranks))
    return {"launcher": world.launcher or "none", "world_size": world.size, "nodes": nodes,
            "ranks_per_node": [sum(host == node for host, _ in ranks) for node in nodes],
            "devices": [dev for _, dev in ranks], "backend": replica.backend, "global_batch": batch_size,
            "per_rank_batch": [len(my_part(range(batch_size), World(r, world.size))) for r in range(world.size)],
            "batch_norm": replica.batch_norm}


def join_world(worlds: List[Dict[str, Any]], world: Dict[str, Any], done: int) -> List[Dict[str, Any]]:
    """The run's worlds with ``world`` training from epoch ``done + 1``: the last one goes on if it is the same."""
    if worlds and {k: v for k, v in worlds[-1].items() if k not in _SEGMENT} == world:
        return worlds
    return worlds + [dict(world, first_epoch=done + 1, last_epoch=None)]


def slice_offsets(ds: DeepHealthDataset) -> List[float]:
    """The dataset's slice channels in mm (what ``predict`` interpolates on other slice spacings)."""
    offsets = ds.slice_channels
    if offsets == [0]:
        return [0.0]
    if not ds.meta.get("slice_spacing"):
        raise LumbarsegError(ds.where, "has slice channels but no slice_spacing: the model could not place its "
                                       "neighbour slices in millimetres")
    return [round(offset * float(ds.meta["slice_spacing"]), 6) for offset in offsets]


def world_change(old: Dict[str, Any], new: Dict[str, Any], done: int) -> str:
    """The resume note when the number of processes changed."""
    ran = epochs_of(old) or f"epochs up to {done}"
    return (f"resumed from epoch {done + 1} by {short_world(new)}; {ran} ran on "
            f"{short_world(old)}; the global batch stays {new['global_batch']} "
            f"({' + '.join(map(str, new['per_rank_batch']))} per rank)")

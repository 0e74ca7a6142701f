"""A model's training record in words: its data, epochs, optimiser and the worlds it was trained in.

A world (``training_data["worlds"]``, one entry per stretch of epochs trained alike; written by
``lumbarseg.training.provenance``) holds the launcher (``none``, ``torchrun``, ``mpirun``, ``srun``), ``world_size``,
``nodes`` (host names) with ``ranks_per_node``, ``devices`` (one per rank), ``backend``, ``global_batch``,
``per_rank_batch``, ``batch_norm`` (``global`` or ``local``) and ``first_epoch``/``last_epoch``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from lumbarseg.model.metadata import ModelMetadata


def describe_world(world: Dict[str, Any]) -> str:
    """One line: ``torchrun, 2 processes on 2 nodes (a: 1, b: 1), cpu, gloo, global batch 4 (2 + 2 per rank),
    BatchNorm global``; one process: ``1 process (no launcher) on HOST, cpu, batch 8``."""
    n = world["world_size"]
    if n == 1:
        launcher = "no launcher" if world["launcher"] == "none" else world["launcher"]
        return f"1 process ({launcher}) on {world['nodes'][0]}, {world['devices'][0]}, batch {world['global_batch']}"
    nodes = ", ".join(f"{node}: {count}" for node, count in zip(world["nodes"], world["ranks_per_node"]))
    devices = list(dict.fromkeys(world["devices"]))
    return (f"{world['launcher']}, {n} processes on {_nodes(world)} ({nodes}), {', '.join(devices)}, "
            f"{world['backend']}, global batch {world['global_batch']} "
            f"({' + '.join(map(str, world['per_rank_batch']))} per rank), BatchNorm {world['batch_norm']}")


def short_world(world: Dict[str, Any]) -> str:
    """``1 process`` or ``4 processes (srun, 2 nodes)``."""
    n = world["world_size"]
    return "1 process" if n == 1 else f"{n} processes ({world['launcher']}, {_nodes(world)})"


def _nodes(world: Dict[str, Any]) -> str:
    count = len(world["nodes"])
    return f"{count} node{'s' if count > 1 else ''}"


def epochs_of(world: Dict[str, Any]) -> Optional[str]:
    """``epochs 3-5`` of a world record; None before its first epoch ended."""
    first, last = world.get("first_epoch"), world.get("last_epoch")
    if first is None or last is None:
        return None
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


def summary(meta: ModelMetadata) -> List[Tuple[str, str]]:
    """(field, text) lines of a model's record: what it segments and expects, its data, training and worlds."""
    spec = meta.spec
    record = meta.training_data
    slices = "1 (2D)" if len(meta.slice_offsets) == 1 else \
        f"{len(meta.slice_offsets)} at {', '.join(f'{o:+g}' if o else '0' for o in meta.slice_offsets)} mm"
    lines = [("classes", ", ".join(meta.classes)),
             ("input", f"{' x '.join(f'{s:g}' for s in meta.spacing)} mm per pixel, trained at "
                       f"{' x '.join(map(str, meta.input_size))}, slices {slices}, orientation {meta.orientation}"),
             ("network", f"U-Net depth {spec.depth}, {spec.base_filters} base filters, "
                         f"{spec.architecture().num_parameters() / 1e6:.2f} M parameters; engine {meta.engine or '-'}, "
                         f"lumbarseg {meta.version}")]
    if record.get("dataset"):
        counts = ", ".join(f"{n} {split}" for split, n in (record.get("slices") or {}).items())
        lines.append(("data", f"{record['dataset']}" + (f" ({counts} slices)" if counts else "")))
    if record.get("epochs") is not None:
        best = record.get("best_epoch")
        dice = record.get("validation_mean_dice")
        text = f"{record['epochs']} epoch{'' if record['epochs'] == 1 else 's'}"
        if best:
            text += f", best epoch {best}"
        if dice is not None:
            text += f" (validation mean Dice {dice:.3f})"
        optimizer = record.get("optimizer") or {}
        if optimizer:
            text += f", {optimizer.get('name')} lr {optimizer.get('lr'):g}"
        if record.get("seed") is not None:
            text += f", seed {record['seed']}"
        lines.append(("training", text))
    worlds = record.get("worlds")
    if not worlds:
        lines.append(("world", "not recorded (a model exported before lumbarseg recorded how it was trained)"))
    for world in worlds or []:
        epochs = epochs_of(world)
        lines.append(("world", (f"{epochs}: " if epochs and len(worlds) > 1 else "") + describe_world(world)))
    return lines

"""The engine-agnostic training loop: epochs of ``engine.train_step``, validation Dice, checkpoints, ONNX.

The loop knows engines only through ``lumbarseg.engines.base.Engine`` and batches only through a
:class:`BatchSource` (by default the portable ``SliceLoader``; an engine may offer its own, e.g.
EDDL from pyecvl's DLDataset, through a ``batch_source(dataset, config)`` classmethod). The run
directory layout and its atomicity are in ``rundir.py``; what the run's models record (metadata, 2.5D slice
offsets, the training record) in ``provenance.py``.

Validation Dice per class is pooled over the whole validation split (all slices' voxels counted
together); a class absent from both the masks and the prediction scores 1. The mean Dice is the
mean over the foreground classes; the best epoch is the one with the highest mean Dice.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from lumbarseg.config import STOP_METRICS, ExperimentConfig, load_config
from lumbarseg.data.deephealth_yaml import DeepHealthDataset, load_dataset
from lumbarseg.engines.base import Engine
from lumbarseg.engines.registry import Device, get_engine, parse_device
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_path
from lumbarseg.model import metadata as model_metadata
from lumbarseg.model.record import describe_world
from lumbarseg.model.registry import resolve_model
from lumbarseg.networks.unet import UNetSpec
from lumbarseg.training import distributed, provenance, rundir
from lumbarseg.training.logs import write_logs
from lumbarseg.training.sources import Batch, BatchSource, BatchSourceFactory, batch_source_for

PathLike = Union[str, Path]


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the run folder.
        epochs_done: epochs finished.
        best_epoch: the epoch of the best validation mean Dice (1-based; None before any).
        best_dice: that mean Dice over the foreground classes.
        stopped_early: whether early stopping ended the run.
    """
    run_dir: Path
    epochs_done: int
    best_epoch: Optional[int]
    best_dice: float
    stopped_early: bool
    worlds: List[Dict[str, Any]] = field(default_factory=list)  # how each stretch of epochs was trained


def train(dataset: PathLike, config: ExperimentConfig, out: PathLike, engine: str = "torch", device: str = "cpu",
          init: Optional[PathLike] = None, batch_source: Optional[BatchSourceFactory] = None,
          progress: bool = True, spacing: Optional[Sequence[float]] = None) -> TrainResult:
    """Train a new run: `lumbarseg train`.

    Args:
        dataset: the dataset YAML (with `training` and `validation` splits).
        config: the experiment config (`load_config`).
        out: the run folder (missing or empty).
        engine: `torch` or `eddl`.
        device: `cpu`, `cuda`, `cuda:N` or `cuda:0,1` (data parallel).
        init: start from a model's weights: an ONNX file or a shipped model's name (`accurate`, `fast`); a
            one-channel model is inflated for a 2.5D run.
        batch_source: where batches come from (default: pyecvl's DLDataset for EDDL when installed, else the
            portable loader).
        progress: show progress bars on stderr.
        spacing: (row, col) pixel spacing in mm of the dataset's slices; overrides the dataset's and the
            config's.

    Returns:
        A `TrainResult`; the run folder holds the config, logs, curves, checkpoints and `best.onnx`.
    """
    out = Path(out)
    rundir.check_new_run_dir(out)  # on every rank, before rank 0 creates it
    dev = parse_device(device)
    ds = _load_training_dataset(dataset)
    config = config.with_classes(ds.classes, source=ds.where)
    if spacing is not None:
        config = replace(config, spacing=tuple(provenance.scaled_spacing(ds, spacing, config)))
    spec = config.spec()
    spec.check_input_size(config.input_size, source="input_size")
    _check_channels(ds, spec)
    replica, dev = distributed.start(engine, dev, config, len(ds.split["training"]))
    engine_cls = get_engine(engine)
    if init is not None:
        init = resolve_model(init)  # a shipped model's name or a file
        net = _engine_from_onnx(engine_cls, init, ds, spec, dev, config)
    else:
        net = engine_cls(spec, dev, threads=config.threads, seed=config.seed)
    replica.prepare(net)
    net.configure_training(config.optimizer, config.loss)
    source = batch_source_for(engine_cls, ds, config, batch_source, replica)
    meta = provenance.base_metadata(ds, config, spec, engine)
    state = _fresh_state()
    state["worlds"] = provenance.join_world([], provenance.world_record(replica, dev, config.batch_size), 0)
    existed = out.is_dir()
    replica.barrier()
    if replica.is_main:
        out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out, replica):
        if replica.is_main:
            rundir.check_new_run_dir(out)  # again under the lock: another training may have started meanwhile
            rundir.write_config(out, config, state["worlds"])
            rundir.write_json(out / rundir.RUN_FILE, {
                "dataset": str(Path(dataset).resolve()), "engine": engine, "device": str(dev), "classes": ds.classes,
                "architecture": spec.to_dict(), "init": str(Path(init).resolve()) if init else None,
                "metadata": asdict(meta)})
        try:
            return _fit(out, net, source, config, ds, meta, state, progress, replica)
        except LumbarsegError:
            if replica.is_main and rundir.latest_checkpoint(out) is None:  # bad input in the first epoch: no run
                shutil.rmtree(out, ignore_errors=True)
                if existed:
                    out.mkdir()
            raise


def resume(run_dir: PathLike, device: Optional[str] = None, dataset: Optional[PathLike] = None,
           batch_source: Optional[BatchSourceFactory] = None, progress: bool = True) -> TrainResult:
    """Continue a run from its newest complete checkpoint up to its config's epoch count.

    Args:
        run_dir: the run folder.
        device: another device (default: the run's).
        dataset: another path of the dataset (it must have the run's classes).
        batch_source: where batches come from (as for `train`).
        progress: show progress bars on stderr.

    Returns:
        A `TrainResult`.
    """
    run_dir = Path(run_dir)
    run = rundir.read_run(run_dir)
    config = load_config(run_dir / rundir.CONFIG_FILE)
    ds = _load_training_dataset(dataset if dataset is not None else run["dataset"])
    if list(ds.classes) != list(run["classes"]):
        raise LumbarsegError(ds.where, f"classes {ds.classes} disagree with the run's classes {run['classes']}")
    dev = parse_device(device if device is not None else run["device"])
    spec = config.spec()
    _check_channels(ds, spec)
    replica, dev = distributed.start(run["engine"], dev, config, len(ds.split["training"]))
    engine_cls = get_engine(run["engine"])
    net = engine_cls(spec, dev, threads=config.threads, seed=config.seed)
    replica.prepare(net)
    net.configure_training(config.optimizer, config.loss)
    state = _fresh_state()
    world = provenance.world_record(replica, dev, config.batch_size)
    with _run_lock(run_dir, replica):
        latest = rundir.latest_checkpoint(run_dir)
        if latest is not None:
            net.load_checkpoint(latest[1] / rundir.ENGINE_CHECKPOINT)
            state = rundir.load_state(latest[1])
        before = state.get("worlds") or []
        state["worlds"] = provenance.join_world(before, world, state["epoch"])
        if replica.is_main and state["worlds"] is not before:
            rundir.write_config(run_dir, config, state["worlds"])
            if before and before[-1]["world_size"] != world["world_size"]:
                note = provenance.world_change(before[-1], world, state["epoch"])
                print(f"lumbarseg: note: {run_dir}: {note}", file=sys.stderr)
        source = batch_source_for(engine_cls, ds, config, batch_source, replica)
        meta = model_metadata.ModelMetadata(**run["metadata"])
        return _fit(run_dir, net, source, config, ds, meta, state, progress, replica)


def _run_lock(run_dir: Path, replica: Any) -> ContextManager[Any]:
    """The run folder's lock, held by rank 0 (the only writer); other ranks follow it."""
    return rundir.locked(run_dir) if replica.is_main else contextlib.nullcontext()


# --- the loop ---------------------------------------------------------------------------------


def _fresh_state() -> Dict[str, Any]:
    return {"epoch": 0, "history": [], "best_epoch": None, "best_dice": -1.0, "stop_best": None,
            "stale_epochs": 0, "stopped_early": False}


def _fit(run_dir: Path, engine: Engine, source: BatchSource, config: ExperimentConfig, ds: DeepHealthDataset,
         meta: model_metadata.ModelMetadata, state: Dict[str, Any], progress: bool,
         replica: Optional[distributed.Replica] = None) -> TrainResult:
    """The epochs; with several processes only rank 0 writes, and its state is every rank's (broadcast)."""
    replica = replica or distributed.Replica()
    classes = list(config.classes or ())
    better = STOP_METRICS[config.early_stopping.metric]
    progress = progress and replica.is_main
    if progress:
        print(f"world: {describe_world(state['worlds'][-1])}", file=sys.stderr)
    while state["epoch"] < config.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        started = time.perf_counter()
        losses, lr = train_epoch(engine, source, config, epoch, progress, replica)
        trained = time.perf_counter() - started
        dice = validate(engine, source.batches("validation", epoch), len(classes), replica.sum)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": replica.mean_loss(losses),
                  "dice": {name: dice[i] for i, name in enumerate(classes) if i > 0},
                  "mean_dice": float(np.mean(dice[1:])), "seconds": time.perf_counter() - started,
                  "train_seconds": trained, "world_size": replica.world.size}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        state["worlds"][-1]["last_epoch"] = epoch + 1
        if record["mean_dice"] > state["best_dice"]:
            state["best_dice"], state["best_epoch"] = record["mean_dice"], epoch + 1
            if replica.is_main:
                engine.save_checkpoint(run_dir / rundir.BEST_CHECKPOINT)
                export_model(engine, run_dir / rundir.BEST_ONNX, provenance.with_training_record(meta, config, state))
        value, previous = record[config.early_stopping.metric], state["stop_best"]
        if previous is None or (value > previous if better == "max" else value < previous):
            state["stop_best"], state["stale_epochs"] = value, 0
        else:
            state["stale_epochs"] += 1
        patience = config.early_stopping.patience
        state["stopped_early"] = bool(patience and state["stale_epochs"] >= patience and state["epoch"] < config.epochs)
        if replica.is_main:
            rundir.save_checkpoint(run_dir, epoch + 1, engine, state)
            if state["epoch"] < config.epochs and not state["stopped_early"]:
                write_logs(run_dir, state["history"], classes, state["best_epoch"], state["worlds"])
        state = replica.agree(state)  # after rank 0's checkpoint: the others wait here for it
        if progress:
            per_class = ", ".join(f"{name} {value:.3f}" for name, value in record["dice"].items())
            print(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, validation mean Dice "
                  f"{record['mean_dice']:.3f} ({per_class})" + (", stopping early" if state["stopped_early"] else ""),
                  file=sys.stderr)
    if state["history"] and replica.is_main:  # also after a kill between the last checkpoint and its logs
        write_logs(run_dir, state["history"], classes, state["best_epoch"], state["worlds"])
    replica.close()
    return TrainResult(run_dir, state["epoch"], state["best_epoch"], max(state["best_dice"], 0.0),
                       state["stopped_early"], state["worlds"])


def train_epoch(engine: Engine, source: BatchSource, config: ExperimentConfig, epoch: int, progress: bool = True,
                replica: Optional[distributed.Replica] = None) -> Tuple[List[float], float]:
    """One pass over the training split (0-based ``epoch``): the batch losses and the last learning rate."""
    replica = replica or distributed.Replica()
    from tqdm import tqdm

    n_batches = source.num_batches("training")
    losses: List[float] = []
    lr = config.optimizer.lr
    bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", file=sys.stderr,
               disable=not progress, leave=False)
    for step, (images, labels) in enumerate(source.batches("training", epoch)):
        if step == 0:
            _check_batch(images, labels, engine.spec)
        lr = config.schedule.lr_at(config.optimizer.lr, epoch + step / max(n_batches, 1), config.epochs)
        engine.set_learning_rate(lr)
        loss = engine.train_step(images, labels)
        if not math.isfinite(loss):
            raise LumbarsegError("training", f"the loss became {loss} in epoch {epoch + 1} (try a lower optimizer.lr)")
        losses.append(loss)
        replica.after_step(engine, step, n_batches)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    return losses, lr


def validate(engine: Engine, batches: Iterable[Batch], num_classes: int,
             reduce: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> List[float]:
    """Dice per class (index 0 = background), pooled over every voxel of the batches (and, with ``reduce``,
    summed over the ranks' shares of the split)."""
    overlap = np.zeros(num_classes)
    predicted = np.zeros(num_classes)
    truth = np.zeros(num_classes)
    for images, labels in batches:
        prediction = engine.predict(images).argmax(axis=1)
        for c in range(num_classes):
            p, t = prediction == c, labels == c
            overlap[c] += np.count_nonzero(p & t)
            predicted[c] += np.count_nonzero(p)
            truth[c] += np.count_nonzero(t)
    if reduce is not None:
        overlap, predicted, truth = reduce(np.stack([overlap, predicted, truth]))
    total = predicted + truth
    return [float(2 * o / s) if s else 1.0 for o, s in zip(overlap, total)]


def export_model(engine: Engine, path: Path, meta: model_metadata.ModelMetadata, overwrite: bool = True) -> None:
    """The engine's ONNX with ``meta`` embedded, appearing at ``path`` only when complete and checked."""
    with atomic_path(path, overwrite) as tmp:
        engine.export_onnx(tmp)
        model_metadata.embed(tmp, meta)


# --- helpers ----------------------------------------------------------------------------------


def _load_training_dataset(path: PathLike) -> DeepHealthDataset:
    ds = load_dataset(path)
    ds.classes  # noqa: B018  (raises a clear error for a dataset without class names)
    for split in ("training", "validation"):
        if not ds.split.get(split):
            raise LumbarsegError(ds.where, f"no {split} split (or it is empty): training needs both training and "
                                           "validation slices (rebuild with lumbarseg dataset ... --split)")
    return ds


def _check_channels(ds: DeepHealthDataset, spec: UNetSpec) -> None:
    channels = len(ds.slice_channels)
    if spec.in_channels != channels:
        raise LumbarsegError(ds.where, f"its samples have {channels} channel(s) (slice_channels {ds.slice_channels}) "
                                       f"but the config's model.in_channels is {spec.in_channels}")


def _engine_from_onnx(engine_cls: Any, path: Path, ds: DeepHealthDataset, spec: UNetSpec, device: Device,
                      config: ExperimentConfig) -> Engine:
    """An engine with ``path``'s weights; a one-channel model starting a 2.5D run is inflated first."""
    meta = model_metadata.read(path)
    if list(meta.classes) != list(ds.classes):
        raise LumbarsegError(path, f"model classes {meta.classes} disagree with the dataset's {ds.classes}")
    widened = replace(meta.spec, in_channels=spec.in_channels)
    if meta.spec.in_channels == 1 and spec.in_channels > 1 and widened == spec:
        from lumbarseg.model.inflate import inflate_input

        with tempfile.TemporaryDirectory(prefix="lumbarseg-init-") as folder:
            inflated = Path(folder) / path.name
            inflate_input(path, inflated, provenance.slice_offsets(ds))
            return engine_cls.from_onnx(inflated, spec, device, threads=config.threads, seed=config.seed)
    if meta.spec != spec:
        raise LumbarsegError(path, f"model architecture {meta.spec} differs from the config's {spec}")
    return engine_cls.from_onnx(path, spec, device, threads=config.threads, seed=config.seed)


def _check_batch(images: np.ndarray, labels: np.ndarray, spec: UNetSpec) -> None:
    """Training batches may be crops smaller than ``input_size``; the U-Net only needs sides divisible by 2**depth."""
    size = tuple(images.shape[2:])
    if tuple(labels.shape[1:]) != size:
        raise LumbarsegError("augmentation.training", f"images come out {size} but masks {tuple(labels.shape[1:])}")
    spec.check_input_size(size, source="augmentation.training: batches")


def export_run(run_dir: PathLike, out: PathLike, checkpoint: str = "best", overwrite: bool = False) -> Path:
    """Write a run's model as an ONNX file with its metadata: `lumbarseg export`.

    Args:
        run_dir: the run folder.
        out: the ONNX file to write (never one of the run's own files).
        checkpoint: `best` (best validation mean Dice) or `last`.
        overwrite: replace an existing `out`.

    Returns:
        The path written.
    """
    run_dir, out = Path(run_dir), Path(out)
    run = rundir.read_run(run_dir)
    latest = rundir.latest_checkpoint(run_dir)
    if checkpoint == "best":
        path = run_dir / rundir.BEST_CHECKPOINT
    elif checkpoint == "last":
        path = latest[1] / rundir.ENGINE_CHECKPOINT if latest else run_dir / rundir.CHECKPOINTS
    else:
        raise LumbarsegError("--checkpoint", f"unknown checkpoint {checkpoint!r} (choose best or last)")
    if not path.is_file():
        raise LumbarsegError(run_dir, f"no {checkpoint} checkpoint yet (has an epoch finished?)")
    rundir.check_export_output(run_dir, out, overwrite)
    spec = UNetSpec.from_dict(run["architecture"])
    engine = get_engine(run["engine"])(spec, Device("cpu"))
    engine.load_checkpoint(path)
    state = rundir.load_state(latest[1]) if latest else {}
    meta = model_metadata.ModelMetadata(**run["metadata"])
    record = dict(meta.training_data, checkpoint=checkpoint, epochs=state.get("epoch"),
                  best_epoch=state.get("best_epoch"), worlds=state.get("worlds", []))
    export_model(engine, out, replace(meta, training_data=record), overwrite)
    return out

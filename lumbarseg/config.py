"""The experiment config: YAML file -> CLI overrides -> one validated, frozen ``ExperimentConfig``.

Every key is checked (unknown keys, wrong types, impossible values) with an error naming the key.
``to_yaml()`` writes the resolved config; loading that file gives the same config back, so a run
directory's ``config.yml`` reproduces the run.

    model: {depth: 4, base_filters: 16, norm: batch, dropout: 0.0}   # classes come from the dataset
    optimizer: {name: adam, lr: 0.001}
    schedule: {name: cosine, warmup_epochs: 1}
    loss: {ce_weight: 1.0, dice_weight: 1.0}
    epochs: 40
    batch_size: 8
    input_size: [320, 256]          # rows, cols
    spacing: [0.94, 0.94]           # mm per pixel (row, col) at input_size
    augmentation:
      training: |
        AugRotate angle=[-8,8]
        AugGammaContrast gamma=[0.8,1.25]
      validation: null
    seed: 0
    early_stopping: {patience: 10, metric: mean_dice}
    distributed: {sync_every: 1, timeout_s: 600, batch_norm: global}   # multi-process runs (docs/guides/cluster.md)
"""
from __future__ import annotations

import difflib
import math
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import UNetSpec
from lumbarseg.transforms.ecvl_spec import SEQUENTIAL, AugSpec, make_spec, parse_spec

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "poly")
BATCH_NORM_MODES = ("global", "local")
STOP_METRICS = {"mean_dice": "max", "train_loss": "min"}  # metric -> which direction is better
SPLITS = ("training", "validation")
# Augmentations after which the image size is fixed; without one the split is resized to input_size first.
SIZING_AUGMENTATIONS = ("AugResizeDim", "AugResizeScale", "AugRandomCrop", "AugCenterCrop")


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimiser and its learning rate (its schedule: ``ScheduleConfig``)."""

    name: str = "adam"  # adam | sgd | rmsprop
    lr: float = 1e-3  # base learning rate
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float = 0.0  # the PyTorch optimiser's weight decay (the EDDL engine refuses > 0)


@dataclass(frozen=True)
class LossConfig:
    """Cross-entropy plus soft Dice averaged over the foreground classes."""

    ce_weight: float = 1.0  # weight of the cross-entropy term
    dice_weight: float = 1.0  # weight of the (1 - soft Dice) term
    class_weights: Optional[List[float]] = field(default=None)  # per class, for the cross-entropy


def unknown_optimizer(name: str) -> LumbarsegError:
    """The error for an optimiser name that is not one of :data:`OPTIMIZERS`."""
    return LumbarsegError("optimizer.name", f"unknown optimiser {name!r} (choose from {', '.join(OPTIMIZERS)})")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over training, evaluated per step from the fractional epoch."""

    name: str = "constant"  # constant | cosine | step | poly
    warmup_epochs: float = 0.0  # linear ramp from 0 to the base rate
    min_lr: float = 0.0  # cosine and poly end here
    step_epochs: int = 10  # step: multiply by gamma every step_epochs
    gamma: float = 0.1  # step: the factor
    power: float = 0.9  # poly exponent

    def lr_at(self, base_lr: float, epoch: float, total_epochs: int) -> float:
        """The rate at fractional epoch ``epoch`` (0 = start) of ``total_epochs``."""
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            return base_lr * epoch / self.warmup_epochs
        if self.name == "constant":
            return base_lr
        if self.name == "step":
            return base_lr * self.gamma ** int(epoch // self.step_epochs)
        span = max(total_epochs - self.warmup_epochs, 1e-12)
        progress = min(max((epoch - self.warmup_epochs) / span, 0.0), 1.0)
        if self.name == "cosine":
            return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr + (base_lr - self.min_lr) * (1 - progress) ** self.power  # poly


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``metric`` has not improved for ``patience`` epochs (None: never stop early)."""

    patience: Optional[int] = None  # epochs without improvement before stopping; null: never stop early
    metric: str = "mean_dice"  # mean_dice (validation, higher is better) | train_loss


@dataclass(frozen=True)
class DistributedConfig:
    """Multi-process training (ignored in one process): see ``lumbarseg.training.distributed``."""

    sync_every: int = 1  # MPI (EDDL engine): average the parameters across ranks every k batches
    timeout_s: float = 600.0  # a collective waiting longer than this fails the job (a rank died or hangs)
    batch_norm: str = "global"  # PyTorch engine: global (the global batch's statistics) | local (each rank's part)


@dataclass(frozen=True)
class ExperimentConfig:
    model: UNetSpec = field(default_factory=UNetSpec)  # the U-Net; its number of classes comes from the dataset
    classes: Optional[List[str]] = None  # set from the dataset; a given list must match it
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 40  # epochs to train (--resume continues up to it)
    batch_size: int = 8  # the global batch, whatever the number of processes
    input_size: Tuple[int, int] = (320, 256)  # network input rows, cols; multiples of 2**depth
    spacing: Optional[Tuple[float, float]] = None  # mm (row, col) at input_size; None: from the dataset
    augmentation: Dict[str, Optional[str]] = field(default_factory=lambda: {s: None for s in SPLITS})  # ECVL text
    seed: int = 0  # initialisation, shuffles and augmentation
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    workers: int = 2  # loader threads
    threads: Optional[int] = None  # CPU threads of the engine; None: the library's default
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def spec(self, num_classes: Optional[int] = None) -> UNetSpec:
        """The architecture for ``num_classes`` (default: ``len(classes)``)."""
        n = num_classes if num_classes is not None else len(self.classes or ())
        return replace(self.model, num_classes=n)

    def with_classes(self, classes: Sequence[str], source: str) -> ExperimentConfig:
        """This config for a dataset with ``classes``; an error if the config names other classes."""
        classes = [str(c) for c in classes]
        if self.classes is not None and list(self.classes) != classes:
            raise LumbarsegError(source, f"classes {classes} disagree with the config's classes {list(self.classes)}")
        return replace(self, classes=classes)

    def to_dict(self) -> Dict[str, Any]:
        data = _plain(asdict(self))
        data["model"] = {f.name: data["model"][f.name] for f in _config_fields(UNetSpec)}
        data["input_size"] = list(self.input_size)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def load_config(path: Union[str, Path, None], overrides: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """Read an experiment config and apply overrides.

    Args:
        path: a YAML file (None: the defaults).
        overrides: values by dotted key (e.g. `{"optimizer.lr": 3e-4, "epochs": 2}`), as the CLI flags give them.

    Returns:
        The validated, frozen config.

    Raises:
        LumbarsegError: an unknown key (with the nearest known one), a wrong type or an impossible value, naming
            the key.
    """
    data: Dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise LumbarsegError(path, "no such config file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise LumbarsegError(path, f"not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise LumbarsegError(path, "a config file must be a mapping of keys to values")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return config_from_dict(data, source)


def sized_augmentation(config: ExperimentConfig, split: str) -> AugSpec:
    """The split's augmentation, starting with a resize to ``input_size`` unless it sizes images itself."""
    text = config.augmentation.get(split)
    rows, cols = config.input_size
    resize = make_spec("AugResizeDim", source=f"augmentation.{split}", dims=[cols, rows])  # ECVL: (width, height)
    if text is None:
        return resize
    spec = parse_spec(text, source=f"augmentation.{split}")
    if any(node.name in SIZING_AUGMENTATIONS for node in spec.walk()):
        return spec
    children = spec.children if spec.name == SEQUENTIAL else (spec,)
    return AugSpec(SEQUENTIAL, {}, (resize,) + tuple(children))


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    data = dict(data)
    if isinstance(data.get("augmentation"), Mapping):  # a split left out has no augmentation
        data["augmentation"] = {**{s: None for s in SPLITS}, **data["augmentation"]}
    config = _build(ExperimentConfig, data, source, "")
    _validate(config, source)
    return config


# --- building and validating ------------------------------------------------------------------


def _set_dotted(data: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise LumbarsegError(source, f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in _config_fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise LumbarsegError(source, f"unknown key {prefix}{key}{hint}")
    values = {name: _convert(data[name], hints[name], source, prefix + name) for name in names if name in data}
    try:
        return cls(**values)
    except LumbarsegError as exc:  # a dataclass's own check; it may name its key more precisely
        key = exc.source if exc.source.startswith(prefix.rstrip(".")) else prefix.rstrip(".")
        raise LumbarsegError(source, f"{key}: {exc.problem}") from None


def _config_fields(cls: type) -> List[Any]:
    """The dataclass fields a config file may set (``metadata={"config": False}`` ones are derived)."""
    return [f for f in fields(cls) if f.metadata.get("config", True)]


def _convert(value: Any, hint: Any, source: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> LumbarsegError:
        return LumbarsegError(source, f"{key}: expected {expected}, got {value!r}")

    if is_dataclass(hint):
        return _build(hint, value, source, key + ".")
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _convert(value, [a for a in args if a is not type(None)][0], source, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("text")
        return value
    if origin in (list, List, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if origin in (tuple, Tuple):
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} values")
            return tuple(_convert(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_convert(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return {str(k): _convert(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"config type {hint!r} of {key} is not supported")  # a programming error


def _validate(config: ExperimentConfig, source: str) -> None:
    def fail(key: str, problem: str) -> None:
        raise LumbarsegError(source, f"{key}: {problem}")

    try:
        spec = config.spec(num_classes=max(2, len(config.classes or ())))
    except LumbarsegError as exc:
        raise LumbarsegError(source, f"{exc.source}: {exc.problem}") from None
    spec.check_input_size(config.input_size, source=f"{source}: input_size")
    if config.classes is not None and (len(config.classes) < 2 or config.classes[0] != "background"):
        fail("classes", f"must start with 'background' and name >= 2 classes, got {config.classes}")
    if config.optimizer.name not in OPTIMIZERS:
        raise LumbarsegError(source, str(unknown_optimizer(config.optimizer.name)))
    if config.optimizer.lr <= 0:
        fail("optimizer.lr", f"must be > 0, got {config.optimizer.lr}")
    if config.schedule.name not in SCHEDULES:
        fail("schedule.name", f"unknown schedule {config.schedule.name!r} (choose from {', '.join(SCHEDULES)})")
    if config.schedule.warmup_epochs < 0 or config.schedule.step_epochs < 1:
        fail("schedule", "warmup_epochs must be >= 0 and step_epochs >= 1")
    if config.loss.ce_weight < 0 or config.loss.dice_weight < 0 or not (config.loss.ce_weight or
                                                                        config.loss.dice_weight):
        fail("loss", "ce_weight and dice_weight must be >= 0 and not both 0")
    if config.classes is not None and config.loss.class_weights is not None and \
            len(config.loss.class_weights) != len(config.classes):
        fail("loss.class_weights", f"needs one weight per class ({len(config.classes)})")
    for key in ("epochs", "batch_size"):
        if getattr(config, key) < 1:
            fail(key, f"must be >= 1, got {getattr(config, key)}")
    if config.workers < 0:
        fail("workers", f"must be >= 0, got {config.workers}")
    if config.threads is not None and config.threads < 1:
        fail("threads", f"must be >= 1, got {config.threads}")
    if config.distributed.sync_every < 1 or config.distributed.timeout_s <= 0:
        fail("distributed", "sync_every must be >= 1 and timeout_s > 0")
    if config.distributed.batch_norm not in BATCH_NORM_MODES:
        fail("distributed.batch_norm", f"unknown mode {config.distributed.batch_norm!r} "
                                       f"(choose from {', '.join(BATCH_NORM_MODES)})")
    if config.spacing is not None and min(config.spacing) <= 0:
        fail("spacing", f"must be two positive values (mm), got {list(config.spacing)}")
    if config.early_stopping.metric not in STOP_METRICS:
        fail("early_stopping.metric", f"unknown metric {config.early_stopping.metric!r} "
                                      f"(choose from {', '.join(STOP_METRICS)})")
    if config.early_stopping.patience is not None and config.early_stopping.patience < 1:
        fail("early_stopping.patience", "must be >= 1 (or null to train all epochs)")
    for split, text in config.augmentation.items():
        if split not in SPLITS:
            fail(f"augmentation.{split}", f"unknown split (use {', '.join(SPLITS)})")
        if text is not None:
            parse_spec(text, source=f"{source}: augmentation.{split}")


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the YAML has no Python tags."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

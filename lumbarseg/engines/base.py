"""The narrow interface every engine implements: build, train step, predict, checkpoints, ONNX.

Arrays cross the interface as numpy: images float32 (N, C_in, H, W), labels int64 (N, H, W),
predictions float32 class probabilities (N, C, H, W) with the softmax over the channel axis.
"""
from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import UNetSpec

# engine name -> (module, class, pip extra that installs it)
ENGINES: Dict[str, Tuple[str, str, str]] = {
    "torch": ("lumbarseg.engines.torch_engine", "TorchEngine", "torch"),
    "eddl": ("lumbarseg.engines.eddl_engine", "EddlEngine", "eddl"),
}
DEVICE_KINDS = ("cpu", "cuda", "fpga")
# What every engine's network, loss and ONNX graph share, so that they agree.
ONNX_OPSET = 13  # Softmax over one axis (the channels); opset 11's flattens C*H*W
BN_EPS = 1e-5
DICE_SMOOTH = 1e-5  # soft Dice = (2 * intersection + smooth) / (sums + smooth)
_DEVICE = re.compile(r"^(cpu|cuda|fpga)(?::(\d+(?:,\d+)*))?$")


@dataclass(frozen=True)
class Device:
    """Where an engine runs: ``cpu``, ``cuda`` (GPU ids), or ``fpga``."""

    kind: str = "cpu"
    ids: Tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.kind + (":" + ",".join(map(str, self.ids)) if self.ids else "")


def parse_device(text: str) -> Device:
    """``cpu``, ``cuda``, ``cuda:0``, ``cuda:0,1`` or ``fpga``."""
    match = _DEVICE.match(text.strip().lower())
    if not match:
        raise LumbarsegError("--device", f"unknown device {text!r} (use cpu, cuda, cuda:0,1 or fpga)")
    ids = tuple(int(i) for i in match.group(2).split(",")) if match.group(2) else ()
    if match.group(1) == "cuda" and not ids:
        ids = (0,)
    return Device(match.group(1), ids)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | sgd | rmsprop
    lr: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    """Cross-entropy plus soft Dice averaged over the foreground classes."""

    ce_weight: float = 1.0
    dice_weight: float = 1.0
    class_weights: Optional[List[float]] = field(default=None)  # per class, for the cross-entropy


class Engine(ABC):
    """One U-Net on one device. Construct, then ``configure_training`` before ``train_step``."""

    name: ClassVar[str]

    def __init__(self, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None, seed: int = 0) -> None:
        self.spec = spec
        self.device = device
        self.threads = threads
        self.seed = seed

    @abstractmethod
    def configure_training(self, optimizer: OptimizerConfig, loss: LossConfig) -> None:
        """Set up optimiser and loss; weights are kept."""

    @abstractmethod
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> float:
        """One optimisation step on a batch; returns the batch loss."""

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C, H, W), inference mode."""

    @abstractmethod
    def set_learning_rate(self, lr: float) -> None:
        """Change the optimiser's learning rate (schedules live in the trainer)."""

    @abstractmethod
    def save_checkpoint(self, path: Path) -> None:
        """Weights and optimiser state, written atomically."""

    @abstractmethod
    def load_checkpoint(self, path: Path) -> None:
        """Restore what ``save_checkpoint`` wrote."""

    @abstractmethod
    def export_onnx(self, path: Path) -> None:
        """Write ``image`` (N, C_in, H, W) -> ``probabilities`` (N, C, H, W) with dynamic N, H, W.

        Metadata is added by ``lumbarseg.model.metadata.embed`` afterwards.
        """

    @classmethod
    @abstractmethod
    def from_onnx(cls, path: Path, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None,
                  seed: int = 0) -> Engine:
        """An engine whose weights come from an ONNX file (written by any engine)."""


def get_engine(name: str) -> Type[Engine]:
    """The engine class by name, imported on demand with a clear error if its library is missing."""
    if name not in ENGINES:
        raise LumbarsegError("--engine", f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    module_name, class_name, extra = ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LumbarsegError(
            f"engine {name}", f"{exc.name or exc} is not installed (pip install 'lumbarseg[{extra}]')"
        ) from None
    return getattr(module, class_name)

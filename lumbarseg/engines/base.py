"""The narrow interface every engine implements: build, train step, predict, checkpoints, ONNX.

Arrays cross the interface as numpy: images float32 (N, C_in, H, W), labels int64 (N, H, W),
predictions float32 class probabilities (N, C, H, W) with the softmax over the channel axis.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from lumbarseg.config import LossConfig, OptimizerConfig
from lumbarseg.engines.registry import DEVICE_KINDS, ENGINES, RUNTIMES, Device, get_engine, parse_device
from lumbarseg.networks.unet import UNetSpec

__all__ = ["BN_EPS", "DEVICE_KINDS", "DICE_SMOOTH", "ENGINES", "RUNTIMES", "Device", "Engine",
           "LossConfig", "OptimizerConfig", "get_engine", "parse_device"]

# What every engine's network and loss share, so that they agree (the ONNX opset: model.onnx_graph).
BN_EPS = 1e-5
DICE_SMOOTH = 1e-5  # soft Dice = (2 * intersection + smooth) / (sums + smooth)


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


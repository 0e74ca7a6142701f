"""The 2D U-Net that every engine builds the same way.

Encoder: ``depth`` levels of two conv3x3-BN-ReLU blocks, max-pool 2x2 between levels, filters
doubling from ``base_filters``. Bottleneck: two blocks (with dropout if set). Decoder: nearest
upsampling x2 + conv3x3-BN-ReLU (EDDL has no CPU transposed convolution and its UpSampling2D is
nearest-only), concatenation with the skip on the channel axis, two blocks. Head: conv1x1 to
per-class logits; the exported model adds a softmax over the channel axis.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

from lumbarseg.errors import LumbarsegError

NORMALISATIONS = ("batch", "none")


@dataclass(frozen=True)
class UNetSpec:
    """Architecture hyperparameters shared by all engines."""

    in_channels: int = 1
    num_classes: int = 4
    depth: int = 4
    base_filters: int = 16
    norm: str = "batch"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.norm not in NORMALISATIONS:
            raise LumbarsegError("model.norm", f"unknown normalisation {self.norm!r} (choose from {NORMALISATIONS})")
        if self.depth < 1 or self.base_filters < 1 or self.num_classes < 2 or self.in_channels < 1:
            raise LumbarsegError("model", f"invalid U-Net spec {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise LumbarsegError("model.dropout", f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def filters(self) -> List[int]:
        """Filters per level, encoder top to bottleneck (``depth + 1`` entries)."""
        return [self.base_filters * 2**level for level in range(self.depth + 1)]

    @property
    def divisor(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.depth

    def check_input_size(self, size: Sequence[int], source: str = "input size") -> None:
        """Raise unless every spatial size is a positive multiple of ``2**depth``."""
        bad = [s for s in size if s <= 0 or s % self.divisor]
        if bad:
            raise LumbarsegError(source, f"size {tuple(size)} is not divisible by 2**depth = {self.divisor}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": "unet2d", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> UNetSpec:
        fields = {k: v for k, v in data.items() if k != "name"}
        if data.get("name", "unet2d") != "unet2d":
            raise LumbarsegError("model", f"unknown architecture {data.get('name')!r}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise LumbarsegError("model", str(exc)) from None

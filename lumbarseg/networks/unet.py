"""The 2D U-Net that every engine builds the same way, written down once as data.

Encoder: ``depth`` levels of two conv3x3-BN-ReLU blocks, max-pool 2x2 between levels, filters
doubling from ``base_filters``. Bottleneck: two blocks (with dropout if set). Decoder: nearest
upsampling x2 + conv3x3-BN-ReLU (EDDL has no CPU transposed convolution and its UpSampling2D is
nearest-only), concatenation [skip, upsampled] on the channel axis, two blocks. Head: conv1x1 to
per-class logits; the exported model adds a softmax over the channel axis.

:meth:`UNetSpec.architecture` lists those pieces with their shapes; the engines walk it to build
their nets, and :meth:`Architecture.layers` is the forward order of every conv and BN that weights
(ONNX, checkpoints, initialisation) follow.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from lumbarseg.errors import LumbarsegError

NORMALISATIONS = ("batch", "none")
LayerShape = Tuple[str, Tuple[int, ...]]  # ("conv", (out, in, k, k)) or ("bn", (channels,))


@dataclass(frozen=True)
class UNetSpec:
    """Architecture hyperparameters shared by all engines; also the config's ``model`` section
    (where ``num_classes`` is not a key: the classes come from the dataset)."""

    in_channels: int = 1  # input channels: 1 for a 2D model, the slice channels of a 2.5D dataset
    num_classes: int = field(default=4, metadata={"config": False})
    depth: int = 4  # levels of the encoder; H and W must be multiples of 2**depth
    base_filters: int = 16  # filters of the first level, doubling at each level below
    norm: str = "batch"  # batch | none
    dropout: float = 0.0  # dropout in the bottleneck, in [0, 1)

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

    def architecture(self) -> Architecture:
        """The network's pieces with their shapes, in forward order."""
        batch = self.norm == "batch"
        f = self.filters

        def block(cin: int, cout: int) -> Block:
            return Block(cin, cout, batch)

        encoder, cin = [], self.in_channels
        for level in range(self.depth):
            encoder.append((block(cin, f[level]), block(f[level], f[level])))
            cin = f[level]
        decoder = tuple((block(f[level + 1], f[level]), block(2 * f[level], f[level]), block(f[level], f[level]))
                        for level in reversed(range(self.depth)))
        return Architecture(self.in_channels, tuple(encoder), (block(f[-2], f[-1]), block(f[-1], f[-1])),
                            self.dropout, decoder, Head(f[0], self.num_classes))

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


@dataclass(frozen=True)
class Block:
    """conv3x3 (pads 1) -> BN -> ReLU; the conv has a bias only without BN (BN's shift makes it redundant)."""

    cin: int
    cout: int
    batch_norm: bool

    def layers(self) -> List[LayerShape]:
        conv: LayerShape = ("conv", (self.cout, self.cin, 3, 3))
        return [conv, ("bn", (self.cout,))] if self.batch_norm else [conv]


@dataclass(frozen=True)
class Head:
    """conv1x1 with bias: per-class logits."""

    cin: int
    classes: int

    def layers(self) -> List[LayerShape]:
        return [("conv", (self.classes, self.cin, 1, 1))]


@dataclass(frozen=True)
class Architecture:
    """The U-Net as data. ``encoder[level]``: two blocks, then max-pool 2x2 (the output before the pool is
    the level's skip); ``bottleneck``: two blocks, then dropout if > 0; ``decoder`` bottom-up, per level:
    upsample x2 + block, concat [skip, up] on channels, two blocks; then ``head``."""

    in_channels: int
    encoder: Tuple[Tuple[Block, Block], ...]
    bottleneck: Tuple[Block, Block]
    dropout: float
    decoder: Tuple[Tuple[Block, Block, Block], ...]
    head: Head

    def layers(self) -> List[LayerShape]:
        """(kind, weight shape) of every conv and BN in forward order: the order all weights follow."""
        blocks = [b for level in self.encoder for b in level] + list(self.bottleneck)
        blocks += [b for level in self.decoder for b in level]
        return [layer for b in blocks for layer in b.layers()] + self.head.layers()

    def has_bias(self, index: int) -> bool:
        """Whether conv number ``index`` (in :meth:`layers`) has a bias: only where no BN follows."""
        layers = self.layers()
        return index == len(layers) - 1 or layers[index + 1][0] != "bn"

    def num_parameters(self) -> int:
        """Trainable weights (conv weights and biases, BN scale and shift; not BN's running statistics)."""
        total = 0
        for index, (kind, shape) in enumerate(self.layers()):
            if kind == "conv":
                total += int(np.prod(shape)) + (shape[0] if self.has_bias(index) else 0)
            else:
                total += 2 * shape[0]
        return total

    def after_dropout(self) -> int:
        """Index (in :meth:`layers`) of the conv that reads the dropout's output: the first decoder conv."""
        before = [b for level in self.encoder for b in level] + list(self.bottleneck)
        return sum(len(b.layers()) for b in before)

    def initial_weights(self, seed: int) -> List[List[np.ndarray]]:
        """PyTorch's default initialisation (uniform +-1/sqrt(fan_in)) drawn from ``seed``, per conv/BN layer:
        conv [weight(, bias)], BN [scale, shift, mean, var]."""
        rng = np.random.default_rng(seed)
        out: List[List[np.ndarray]] = []
        for index, (kind, shape) in enumerate(self.layers()):
            if kind == "conv":
                bound = 1.0 / math.sqrt(shape[1] * shape[2] * shape[3])
                weights = [rng.uniform(-bound, bound, shape).astype(np.float32)]
                if self.has_bias(index):
                    weights.append(rng.uniform(-bound, bound, shape[0]).astype(np.float32))
                out.append(weights)
            else:
                n = shape[0]
                out.append([np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32),
                            np.ones(n, np.float32)])
        return out

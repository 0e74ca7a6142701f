"""The U-Net of :mod:`lumbarseg.networks.unet` as an EDDL net, and its weights in and out.

Layer for layer what the PyTorch engine builds (Conv2D without bias before BatchNormalization,
MaxPool2D, UpSampling2D nearest + conv, Concat on the channel axis, 1x1 head, Softmax on axis 1).
Weights travel as the architecture's per-layer list (conv [weight(, bias)], BN [scale, shift, mean,
var], in :meth:`~lumbarseg.networks.unet.Architecture.layers` order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pyeddl  # noqa: F401  (imported before pyecvl, always)
from pyeddl import eddl
from pyeddl.tensor import Tensor

from lumbarseg.engines.base import BN_EPS
from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import Architecture, Block

BN_MOMENTUM = 0.9  # EDDL: running = 0.9 * running + 0.1 * batch (PyTorch's momentum 0.1)
Size = Tuple[int, int]


class Built:
    """A built EDDL U-Net: the model, its conv/BN layers in forward order, and its (H, W)."""

    def __init__(self, net: Any, layers: List[Tuple[str, Any]], size: Size) -> None:
        self.net = net
        self.layers = layers
        self.size = size


def build_unet(arch: Architecture, size: Size) -> Tuple[Any, List[Tuple[str, Any]]]:
    """The U-Net for (H, W) = ``size`` with a channel Softmax on top; unbuilt (no computing service yet)."""
    layers: List[Tuple[str, Any]] = []

    def block(x: Any, b: Block) -> Any:
        x = eddl.Conv2D(x, b.cout, [3, 3], [1, 1], "same", use_bias=not b.batch_norm)
        layers.append(("conv", x))
        if b.batch_norm:
            x = eddl.BatchNormalization(x, True, BN_MOMENTUM, BN_EPS)
            layers.append(("bn", x))
        return eddl.ReLu(x)

    inp = eddl.Input([arch.in_channels, size[0], size[1]])
    x = inp
    skips = []
    for first, second in arch.encoder:
        x = block(block(x, first), second)
        skips.append(x)
        x = eddl.MaxPool2D(x, [2, 2], [2, 2])
    x = block(block(x, arch.bottleneck[0]), arch.bottleneck[1])
    if arch.dropout > 0:
        x = eddl.Dropout(x, arch.dropout, True)  # inference weighting: see eddl_engine's docstring
    for (up, first, second), skip in zip(arch.decoder, reversed(skips)):
        x = eddl.Concat([skip, block(eddl.UpSampling2D(x, [2, 2]), up)], 0)  # axis 0 = channels (no batch axis)
        x = block(block(x, first), second)
    logits = eddl.Conv2D(x, arch.head.classes, [1, 1], [1, 1], "same", use_bias=True)
    layers.append(("conv", logits))
    out = eddl.Softmax(logits, 1)  # axis 1 = channels here (EDDL's default -1 would be the width)
    return eddl.Model([inp], [out]), layers


def write_weights(built: Built, weights: List[List[np.ndarray]]) -> None:
    """Put per-layer ``weights`` into the built net (other layers keep theirs)."""
    by_layer = {id(layer): arrays for (_, layer), arrays in zip(built.layers, weights)}
    params = []
    for layer in built.net.layers:
        arrays = by_layer.get(id(layer))
        current = eddl.getParams(layer)
        if arrays is None:
            params.append(current)
        else:
            if len(arrays) == 1 and len(current) == 2:  # EDDL conv keeps a (zero) bias slot
                arrays = [arrays[0], np.zeros(arrays[0].shape[0], np.float32)]
            params.append([Tensor.fromarray(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays])
    eddl.set_parameters(built.net, params)


def read_weights(built: Built, arch: Architecture) -> List[List[np.ndarray]]:
    """The built net's per-layer weights (a conv's bias slot dropped where the architecture has none)."""
    params = eddl.get_parameters(built.net, True)
    index = {id(layer): i for i, layer in enumerate(built.net.layers)}
    out = []
    for n, (_, layer) in enumerate(built.layers):
        arrays = [np.array(t.getdata(), dtype=np.float32) for t in params[index[id(layer)]]]
        if len(arrays) == 2 and arrays[0].ndim == 4 and not arch.has_bias(n):
            arrays = arrays[:1]
        out.append(arrays)
    return out


def output(net: Any) -> np.ndarray:
    """The net's (softmax) output of the last forward pass."""
    return np.asarray(eddl.getOutput(eddl.getOut(net)[0]).getdata(), dtype=np.float32)  # getdata() copies


def fix_batchnorm_gradients(net: Any) -> None:
    """Turn EDDL's BatchNorm scale/shift gradients into true ones: EDDL 1.1b averages them over the
    N = batch * H * W positions (cpu_bn.cpp: ``gbn_g += mean(delta * x_hat)``) where the gradient of the
    loss is their sum, which all but freezes BN's affine parameters. Applied per computing replica."""
    for replica in net.snets:
        for layer in replica.layers:
            if type(layer).__name__ == "LBatchNorm" and layer.gradients:
                shape = layer.output.shape
                positions = float(shape[0] * int(np.prod(shape[2:])))
                for gradient in layer.gradients:
                    gradient.mult_(positions)


def bin_shapes(path: Path) -> List[Tuple[int, ...]]:
    """Tensor shapes in an EDDL ``bin`` file (per tensor: int32 ndim, int32 dims, float32 data)."""
    data = path.read_bytes()
    shapes: List[Tuple[int, ...]] = []
    pos = 0
    try:
        while pos < len(data):
            ndim = int(np.frombuffer(data, np.int32, 1, pos)[0])
            if not 0 < ndim <= 8:
                raise ValueError
            dims = tuple(int(d) for d in np.frombuffer(data, np.int32, ndim, pos + 4))
            pos += 4 + 4 * ndim + 4 * int(np.prod(dims))
            shapes.append(dims)
    except ValueError:
        raise LumbarsegError(path, "not an EDDL checkpoint (unreadable tensor header)") from None
    if pos != len(data):
        raise LumbarsegError(path, "truncated EDDL checkpoint")
    return shapes

"""The DeepHealth engine: the U-Net of ``networks/unet.py`` in pyeddl on CPU, CUDA GPUs, or FPGA (inference).

Layer for layer what the PyTorch engine builds (Conv2D without bias before BatchNormalization,
MaxPool2D, UpSampling2D nearest + conv, Concat on the channel axis, 1x1 head, Softmax on axis 1),
so weights move between the engines through ONNX in both directions.

Loss. EDDL's built-in losses cannot express the toolkit's loss (its ``dice`` pools all channels,
background included, per sample). The loss and its gradient with respect to the logits are
computed here in numpy, exactly as the PyTorch engine defines them, and handed to EDDL through its
own ``softmax_cross_entropy`` path: with a Softmax output that loss back-propagates
``(P - T) / N`` into the logits, so the soft target ``T = P - N * (H * W) * grad`` makes EDDL
back-propagate ``H * W * grad`` (for plain cross-entropy ``T`` is the one-hot label itself). The
factor ``H * W`` keeps ``T`` well conditioned in float32; the optimisers are set up so that it
cancels (SGD: learning rate / ``H * W``; Adam, RMSprop: scale-invariant, epsilon scaled).

EDDL optimisers are not PyTorch's (documented in the README): Adam puts epsilon inside the square
root, SGD folds the learning rate into the momentum buffer, RMSprop has no momentum, none applies
weight decay (so a ``weight_decay`` > 0 is refused), and the checkpoint (safetensors) holds the
weights and BatchNorm statistics but no optimiser state.

Dropout: EDDL's Dropout scales at inference (``x * (1 - p)``), PyTorch's during training; the two
are the same network once the conv after the dropout is scaled by ``1 - p``, which export and
import apply.

EDDL nets have a fixed input size: the engine builds its net for the first batch's (or the given
``input_size``) height and width and keeps one inference net per other size it is asked to predict,
refreshed from the trained weights when they change.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyeddl  # noqa: F401  (imported before pyecvl, always)
from pyeddl import eddl
from pyeddl.tensor import Tensor

from lumbarseg.engines.base import BN_EPS, DICE_SMOOTH, ONNX_OPSET, Device, Engine, LossConfig, OptimizerConfig
from lumbarseg.errors import LumbarsegError
from lumbarseg.io import tensors
from lumbarseg.io.atomic import atomic_path
from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME
from lumbarseg.networks.unet import UNetSpec

BN_MOMENTUM = 0.9  # EDDL: running = 0.9 * running + 0.1 * batch (PyTorch's momentum 0.1)
TORCH_EPS = 1e-8  # PyTorch's Adam/RMSprop epsilon, reproduced under the gradient scale
RMSPROP_RHO = 0.99  # PyTorch's RMSprop alpha
MEMORY_LEVELS = ("full_mem", "mid_mem", "low_mem")
CHECKPOINT_FORMAT = "lumbarseg-eddl-checkpoint-1"
Size = Tuple[int, int]
_LIBC = ctypes.CDLL(None)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence what the C++ library prints on stdout (build summaries, 'set new lr' on every step)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _LIBC.fflush(None)  # C++ cout shares C stdio's buffer: empty it while it still goes to /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# --- computing services -----------------------------------------------------------------------


def computing_service(device: Device, threads: Optional[int] = None, mem: str = "full_mem", lsb: int = 1) -> Any:
    """``CS_CPU`` / ``CS_GPU`` for a device, with a clear error where this EDDL was not built for it.

    A CPU-only EDDL raises ``[Hardware not supported] ... not compiled for 'gpu'`` from CS_GPU (and
    likewise for 'fpga') as a Python RuntimeError without harming the process, so it is caught here.
    """
    if mem not in MEMORY_LEVELS:
        raise LumbarsegError("eddl memory level", f"unknown {mem!r} (choose from {', '.join(MEMORY_LEVELS)})")
    if device.kind == "cpu":
        with quiet():
            return eddl.CS_CPU(th=int(threads) if threads else -1, mem=mem)
    if device.kind == "cuda":
        mask = [1 if i in device.ids else 0 for i in range(max(device.ids) + 1)]
        return _hardware(lambda: eddl.CS_GPU(g=mask, lsb=lsb, mem=mem), device)
    raise LumbarsegError("--device", f"{device}: EDDL trains on cpu or cuda; fpga is for inference (predict)")


def _hardware(make: Any, device: Device) -> Any:
    try:
        with quiet():
            return make()
    except RuntimeError as exc:
        text = str(exc)
        if "not supported" in text or "not compiled" in text or "FPGA" in text.upper():
            raise LumbarsegError("--device", f"{device}: the installed EDDL was not built for this target "
                                             f"({text.strip()}); install an EDDL build with {device.kind} "
                                             "support or use --device cpu") from None
        raise LumbarsegError("--device", f"{device}: EDDL could not use it ({text.strip()})") from None


def _fpga(net: Any, device: Device) -> Any:
    """The inference copy of a built CPU net on the FPGA (EDDL 1.1b: HLSinf through ``toFPGA``)."""
    _hardware(lambda: eddl.CS_FPGA([1]), device)  # fails cleanly on a build without FPGA support
    return _hardware(lambda: eddl.toFPGA(net), device)


# --- the network ------------------------------------------------------------------------------


class Built:
    """A built EDDL U-Net: the model, its logits layer and its conv/BN layers in forward order."""

    def __init__(self, net: Any, layers: List[Tuple[str, Any]], size: Size) -> None:
        self.net = net
        self.layers = layers
        self.size = size


def build_unet(spec: UNetSpec, size: Size) -> Tuple[Any, List[Tuple[str, Any]]]:
    """The U-Net for (H, W) = ``size`` with a channel Softmax on top; unbuilt (no computing service yet)."""
    layers: List[Tuple[str, Any]] = []
    batch = spec.norm == "batch"

    def block(x: Any, filters: int) -> Any:
        x = eddl.Conv2D(x, filters, [3, 3], [1, 1], "same", use_bias=not batch)
        layers.append(("conv", x))
        if batch:
            x = eddl.BatchNormalization(x, True, BN_MOMENTUM, BN_EPS)
            layers.append(("bn", x))
        return eddl.ReLu(x)

    f = spec.filters
    inp = eddl.Input([spec.in_channels, size[0], size[1]])
    x = inp
    skips = []
    for level in range(spec.depth):
        x = block(block(x, f[level]), f[level])
        skips.append(x)
        x = eddl.MaxPool2D(x, [2, 2], [2, 2])
    x = block(block(x, f[-1]), f[-1])
    if spec.dropout > 0:
        x = eddl.Dropout(x, spec.dropout, True)  # inference weighting: see the module docstring
    for level in reversed(range(spec.depth)):
        up = block(eddl.UpSampling2D(x, [2, 2]), f[level])
        x = eddl.Concat([skips[level], up], 0)  # axis 0 = channels (EDDL's axes exclude the batch)
        x = block(block(x, f[level]), f[level])
    logits = eddl.Conv2D(x, spec.num_classes, [1, 1], [1, 1], "same", use_bias=True)
    layers.append(("conv", logits))
    out = eddl.Softmax(logits, 1)  # axis 1 = channels here (EDDL's default -1 would be the width)
    return eddl.Model([inp], [out]), layers


def initial_weights(spec: UNetSpec, seed: int) -> List[List[np.ndarray]]:
    """PyTorch's default initialisation (uniform +-1/sqrt(fan_in)), drawn from ``seed``: per conv/BN layer."""
    rng = np.random.default_rng(seed)
    out: List[List[np.ndarray]] = []
    for kind, shape in layer_shapes(spec):
        if kind == "conv":
            bound = 1.0 / math.sqrt(shape[1] * shape[2] * shape[3])
            weights = [rng.uniform(-bound, bound, shape).astype(np.float32)]
            if len(shape) == 4 and _has_bias(spec, len(out)):
                weights.append(rng.uniform(-bound, bound, shape[0]).astype(np.float32))
            out.append(weights)
        else:
            n = shape[0]
            out.append([np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32),
                        np.ones(n, np.float32)])
    return out


def layer_shapes(spec: UNetSpec) -> List[Tuple[str, Tuple[int, ...]]]:
    """(kind, conv weight shape or (channels,)) of every conv and BN in forward order."""
    f = spec.filters
    shapes: List[Tuple[str, Tuple[int, ...]]] = []

    def block(cin: int, cout: int) -> None:
        shapes.append(("conv", (cout, cin, 3, 3)))
        if spec.norm == "batch":
            shapes.append(("bn", (cout,)))

    cin = spec.in_channels
    for level in range(spec.depth):
        block(cin, f[level])
        block(f[level], f[level])
        cin = f[level]
    block(f[-2], f[-1])
    block(f[-1], f[-1])
    for level in reversed(range(spec.depth)):
        block(f[level + 1], f[level])
        block(2 * f[level], f[level])
        block(f[level], f[level])
    shapes.append(("conv", (spec.num_classes, f[0], 1, 1)))
    return shapes


def _has_bias(spec: UNetSpec, index: int) -> bool:
    """Convs have a bias only where no BN follows: the head, or every conv without normalisation."""
    return spec.norm != "batch" or index == len(layer_shapes(spec)) - 1


def _after_dropout(spec: UNetSpec) -> int:
    """Index (in ``layer_shapes``) of the conv that reads the dropout's output: the first decoder conv."""
    per_block = 2 if spec.norm == "batch" else 1
    return (2 * spec.depth + 2) * per_block


# --- the loss ---------------------------------------------------------------------------------


def loss_and_gradient(probs: np.ndarray, labels: np.ndarray, loss: LossConfig,
                      class_weights: Optional[np.ndarray]) -> Tuple[float, np.ndarray]:
    """The PyTorch engine's loss (``ce_weight`` * CE + ``dice_weight`` * (1 - mean foreground soft Dice)) and
    its gradient with respect to the logits, from the softmax probabilities (float32, sums in float64)."""
    p = np.asarray(probs, np.float32)
    num_classes = p.shape[1]
    onehot = (labels[:, None] == np.arange(num_classes)[None, :, None, None]).astype(np.float32)
    grad = np.zeros_like(p)
    total = 0.0
    if loss.ce_weight:
        picked = np.take_along_axis(p, labels[:, None].astype(np.int64), axis=1)
        log_picked = np.log(np.clip(picked, 1e-30, None), dtype=np.float64)
        if class_weights is None:
            count = float(labels.size)
            total += loss.ce_weight * float(-log_picked.sum() / count)
            grad += (p - onehot) * np.float32(loss.ce_weight / count)
        else:
            w = np.asarray(class_weights, np.float32)[labels][:, None]
            count = float(w.sum(dtype=np.float64))
            total += loss.ce_weight * float(-(w * log_picked).sum() / count)
            grad += w * (p - onehot) * np.float32(loss.ce_weight / count)
    if loss.dice_weight and num_classes > 1:
        fg_p, fg_y = p[:, 1:], onehot[:, 1:]
        dims = (0, 2, 3)
        intersection = (fg_p * fg_y).sum(dims, dtype=np.float64)
        denominator = fg_p.sum(dims, dtype=np.float64) + fg_y.sum(dims, dtype=np.float64) + DICE_SMOOTH
        dice = (2 * intersection + DICE_SMOOTH) / denominator
        total += loss.dice_weight * float(1 - dice.mean())
        scale = loss.dice_weight / (num_classes - 1)
        shape = (1, -1, 1, 1)
        d_probs = np.zeros_like(p)  # d(loss)/d(probabilities); background has none
        d_probs[:, 1:] = (fg_y * (-2 * scale / denominator).astype(np.float32).reshape(shape)
                          + (scale * dice / denominator).astype(np.float32).reshape(shape))
        grad += p * (d_probs - (p * d_probs).sum(axis=1, keepdims=True))  # back through the softmax
    return total, grad


# --- the engine -------------------------------------------------------------------------------


class EddlEngine(Engine):
    """The U-Net in pyeddl. ``input_size`` (H, W) fixes the first net's size (else the first batch's);
    ``mem`` is EDDL's memory level, ``lsb`` the batches between multi-GPU weight syncs."""

    name = "eddl"

    def __init__(self, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None, seed: int = 0,
                 input_size: Optional[Sequence[int]] = None, mem: str = "full_mem", lsb: int = 1) -> None:
        super().__init__(spec, device, threads, seed)
        self.mem, self.lsb = mem, lsb
        if device.kind not in ("cpu", "cuda", "fpga"):
            raise LumbarsegError("--device", f"unknown device {device}")
        if device.kind != "fpga":
            computing_service(device, threads, mem, lsb)  # fail now, with a clear error, if the build lacks it
        self.optimizer_config = OptimizerConfig()
        self.loss_config = LossConfig()
        self.class_weights: Optional[np.ndarray] = None
        self.weights: List[List[np.ndarray]] = initial_weights(spec, seed)
        self.train_net: Optional[Built] = None
        self.predict_nets: Dict[Size, Tuple[Built, int]] = {}
        self.version = 0  # bumped whenever the trained weights change
        self._dirty = False  # the training net holds newer weights than ``self.weights``
        self.configured = False
        self.lr: Optional[float] = None  # the rate the training net runs at (``optimizer_config.lr`` once applied)
        self.home_size: Optional[Size] = tuple(input_size) if input_size else None  # type: ignore[assignment]
        if self.home_size is not None:
            spec.check_input_size(self.home_size)

    # building ---------------------------------------------------------------------------------
    def _optimizer(self, scale: float) -> Any:
        config = self.optimizer_config
        name = config.name.lower()
        eps = (scale * TORCH_EPS) ** 2  # inside EDDL's square root, under gradients scaled by ``scale``
        if name == "adam":
            return eddl.adam(config.lr, 0.9, 0.999, eps)
        if name == "sgd":
            return eddl.sgd(config.lr / scale, config.momentum)
        if name == "rmsprop":
            return eddl.rmsprop(config.lr, RMSPROP_RHO, eps)
        raise LumbarsegError("optimizer.name", f"unknown optimiser {config.name!r} (choose from adam, sgd, rmsprop)")

    def _build(self, size: Size) -> Built:
        self.spec.check_input_size(size, source="image size")
        net, layers = build_unet(self.spec, size)
        scale = float(size[0] * size[1])
        device = Device("cpu") if self.device.kind == "fpga" else self.device
        cs = computing_service(device, self.threads, self.mem, self.lsb)
        with quiet():
            eddl.build(net, self._optimizer(scale), ["softmax_cross_entropy"], ["none"], cs, False)
        built = Built(net, layers, size)
        self._write_weights(built)
        return built

    def _write_weights(self, built: Built) -> None:
        by_layer = {id(layer): arrays for (_, layer), arrays in zip(built.layers, self.weights)}
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

    def _read_weights(self, built: Built) -> List[List[np.ndarray]]:
        params = eddl.get_parameters(built.net, True)
        index = {id(layer): i for i, layer in enumerate(built.net.layers)}
        out = []
        for n, (_, layer) in enumerate(built.layers):
            arrays = [np.array(t.getdata(), dtype=np.float32) for t in params[index[id(layer)]]]
            if len(arrays) == 2 and arrays[0].ndim == 4 and not _has_bias(self.spec, n):
                arrays = arrays[:1]
            out.append(arrays)
        return out

    def _sync(self) -> None:
        """Copy the training net's weights into ``self.weights`` (the engine's one source of truth)."""
        if self.train_net is not None and self._dirty:
            self.weights = self._read_weights(self.train_net)
            self._dirty = False

    def _training_net(self, size: Size) -> Built:
        if self.train_net is None or self.train_net.size != size:
            self._sync()
            self.train_net = self._build(size)
            self.lr = self.optimizer_config.lr
        return self.train_net

    # training ---------------------------------------------------------------------------------
    def configure_training(self, optimizer: OptimizerConfig, loss: LossConfig) -> None:
        if self.device.kind == "fpga":
            raise LumbarsegError("--device", "fpga: EDDL 1.1b runs FPGAs for inference only; train on cpu or cuda")
        if optimizer.name.lower() not in ("adam", "sgd", "rmsprop"):
            raise LumbarsegError("optimizer.name",
                                 f"unknown optimiser {optimizer.name!r} (choose from adam, sgd, rmsprop)")
        if optimizer.weight_decay:
            raise LumbarsegError("optimizer.weight_decay", "EDDL 1.1b optimisers ignore weight decay; set it to 0 "
                                                           "for --engine eddl")
        if loss.class_weights is not None and len(loss.class_weights) != self.spec.num_classes:
            raise LumbarsegError("loss.class_weights", f"needs {self.spec.num_classes} values (one per class), "
                                 f"got {len(loss.class_weights)}")
        self._sync()
        self.optimizer_config = optimizer
        self.loss_config = loss
        self.class_weights = np.asarray(loss.class_weights, np.float64) if loss.class_weights is not None else None
        self.train_net = None  # rebuilt with the new optimiser at the first step
        self.configured = True

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> float:
        if not self.configured:
            raise RuntimeError("configure_training() must be called before train_step()")
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = (int(images.shape[2]), int(images.shape[3]))
        built = self._training_net(size)
        net = built.net
        eddl.set_mode(net, 1)
        eddl.zeroGrads(net)  # train_batch does this itself; forward/backward/update do not
        eddl.forward(net, [Tensor.fromarray(images)])
        probs = _output(net)
        value, grad = loss_and_gradient(probs, np.asarray(labels), self.loss_config, self.class_weights)
        target = probs - (images.shape[0] * size[0] * size[1]) * grad  # see the module docstring
        eddl.backward(net, [Tensor.fromarray(target.astype(np.float32, copy=False))])
        _fix_batchnorm_gradients(net)
        eddl.update(net)
        self.version += 1
        self._dirty = True
        return value

    def set_learning_rate(self, lr: float) -> None:
        if not self.configured:
            raise RuntimeError("configure_training() must be called before set_learning_rate()")
        self.optimizer_config = replace(self.optimizer_config, lr=float(lr))  # a net built later starts at it
        wanted = self.optimizer_config.lr
        if self.train_net is None or self.lr == wanted:
            return
        scale = self.train_net.size[0] * self.train_net.size[1]
        with quiet():  # EDDL prints "set new lr" on every call
            eddl.setlr(self.train_net.net, [wanted / scale if self.optimizer_config.name.lower() == "sgd" else wanted])
        self.lr = wanted

    # inference --------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = (int(images.shape[2]), int(images.shape[3]))
        net = self._predict_net(size)
        eddl.set_mode(net, 0)
        eddl.forward(net, [Tensor.fromarray(images)])
        return _output(net)

    def _predict_net(self, size: Size) -> Any:
        if self.device.kind != "fpga" and self.train_net is not None and self.train_net.size == size:
            return self.train_net.net
        self._sync()
        cached = self.predict_nets.get(size)
        if cached is None:
            built = self._build(size)
            if self.device.kind == "fpga":
                built = Built(_fpga(built.net, self.device), built.layers, size)
            self.predict_nets[size] = (built, self.version)
        elif cached[1] != self.version:
            if self.device.kind == "fpga":
                del self.predict_nets[size]
                return self._predict_net(size)
            self._write_weights(cached[0])
            self.predict_nets[size] = (cached[0], self.version)
        return self.predict_nets[size][0].net

    def _reference_net(self) -> Built:
        """A net holding the current weights (any size), for saving."""
        if self.train_net is not None:
            return self.train_net
        size = self.home_size or (self.spec.divisor * 2, self.spec.divisor * 2)
        self._predict_net(size)
        return self.predict_nets[size][0]

    def get_weights(self) -> List[List[np.ndarray]]:
        """Per conv/BN layer in forward order: conv [weight(, bias)], BN [scale, shift, mean, var]."""
        self._sync()
        return [[a.copy() for a in arrays] for arrays in self.weights]

    def set_weights(self, weights: List[List[np.ndarray]], source: str = "weights") -> None:
        """Replace every weight (shapes checked against the spec); training nets keep their optimiser."""
        expected = layer_shapes(self.spec)
        if len(weights) != len(expected):
            raise LumbarsegError(source, f"{len(weights)} conv/BN layers, the U-Net of {self.spec} has "
                                         f"{len(expected)}")
        for n, ((kind, shape), arrays) in enumerate(zip(expected, weights)):
            if tuple(arrays[0].shape) != shape:
                raise LumbarsegError(source, f"{kind} layer {n} has shape {tuple(arrays[0].shape)}, the U-Net "
                                             f"needs {shape}")
        self.weights = [[np.asarray(a, np.float32) for a in arrays] for arrays in weights]
        self._dirty = False
        self.version += 1
        if self.train_net is not None:
            self._write_weights(self.train_net)

    # checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        """Weights and BN statistics (EDDL keeps no optimiser state) as safetensors (``lumbarseg.io.tensors``)."""
        tensors.save(path, {"format": CHECKPOINT_FORMAT, "spec": self.spec.to_dict(), "layers": self.get_weights()})

    def load_checkpoint(self, path: Path) -> None:
        """A safetensors checkpoint, or an EDDL ``bin`` file of an earlier version (plain tensors)."""
        path = Path(path)
        if not path.is_file():
            raise LumbarsegError(path, "no such checkpoint")
        if tensors.kind(path) == "safetensors":
            state = tensors.load(path)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise LumbarsegError(path, "not a lumbarseg EDDL checkpoint")
            if UNetSpec.from_dict(state["spec"]) != self.spec:
                raise LumbarsegError(path, f"not an EDDL checkpoint of the U-Net {self.spec} (it holds "
                                           f"{UNetSpec.from_dict(state['spec'])})")
            self.set_weights(state["layers"], source=str(path))
            return
        built = self._reference_net()
        expected = [tuple(t.shape) for layer_params in eddl.get_parameters(built.net, True) for t in layer_params]
        found = _bin_shapes(path)
        if found != expected:
            raise LumbarsegError(path, f"not an EDDL checkpoint of the U-Net {self.spec} (tensor shapes differ)")
        with quiet():
            eddl.load(built.net, str(path), "bin")
        self.weights = self._read_weights(built)
        self._dirty = False
        self.version += 1
        if self.train_net is not None and built is not self.train_net:
            self._write_weights(self.train_net)

    # ONNX -------------------------------------------------------------------------------------
    def export_onnx(self, path: Path) -> None:
        """EDDL's ONNX, made to meet the contract: see :func:`contract_graph`."""
        built = self._reference_net()
        self._sync()
        self._write_weights(built)
        with tempfile.TemporaryDirectory(prefix="lumbarseg-eddl-") as folder:
            raw = Path(folder) / "eddl.onnx"
            with quiet():
                eddl.save_net_to_onnx_file(built.net, str(raw))
            data = contract_graph(raw.read_bytes(), self.spec)
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(data)

    @classmethod
    def batch_source(cls, dataset: Any, config: Any) -> Any:
        """The trainer's hook: batches from pyecvl's DLDataset when pyecvl is installed, else None (the
        portable loader)."""
        try:
            from pyecvl import ecvl  # noqa: F401
        except ImportError:
            return None
        return DLDatasetSource(dataset, config)

    @classmethod
    def from_onnx(cls, path: Path, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None,
                  seed: int = 0, input_size: Optional[Sequence[int]] = None, **kwargs: Any) -> EddlEngine:
        """Import with ``eddl.import_net_from_onnx_file`` at (H, W) = ``input_size`` (else the metadata's
        ``input_size``, else 2**(depth+1) square) and adopt its weights; other sizes are rebuilt on demand."""
        path = Path(path)
        size = _import_size(path, spec, input_size)
        engine = cls(spec, device, threads, seed, input_size=size, **kwargs)
        engine.set_weights(import_weights(path, spec, size), source=str(path))
        return engine


# --- helpers ----------------------------------------------------------------------------------


def _fix_batchnorm_gradients(net: Any) -> None:
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


def _output(net: Any) -> np.ndarray:
    return np.asarray(eddl.getOutput(eddl.getOut(net)[0]).getdata(), dtype=np.float32)  # getdata() copies


def _bin_shapes(path: Path) -> List[Tuple[int, ...]]:
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


def _import_size(path: Path, spec: UNetSpec, input_size: Optional[Sequence[int]]) -> Size:
    if input_size is None:
        from lumbarseg.model import metadata

        try:
            input_size = metadata.read(path).input_size
        except LumbarsegError:
            input_size = None
    size = tuple(int(s) for s in input_size) if input_size else (spec.divisor * 2, spec.divisor * 2)
    spec.check_input_size(size, source=f"{path}: input size")
    return size  # type: ignore[return-value]


def import_weights(path: Path, spec: UNetSpec, size: Size) -> List[List[np.ndarray]]:
    """The conv/BN weights of any ONNX U-Net of ``spec``, read through EDDL's ONNX importer.

    The graph is made importable first (:func:`importable_graph`). A conv bias in front of a BN (EDDL
    invents zeros) is folded into the BN's mean; PyTorch's inverted dropout becomes EDDL's.
    """
    data, conv_biases = importable_graph(path)
    with tempfile.TemporaryDirectory(prefix="lumbarseg-eddl-") as folder:
        fixed = Path(folder) / "import.onnx"
        fixed.write_bytes(data)
        try:
            with quiet():
                net = eddl.import_net_from_onnx_file(str(fixed), [spec.in_channels, size[0], size[1]])
                eddl.build(net, eddl.adam(1e-3), ["softmax_cross_entropy"], ["none"], eddl.CS_CPU(), False)
        except RuntimeError as exc:
            raise LumbarsegError(path, f"EDDL could not import this ONNX model ({str(exc).strip()})") from None
    found: List[Tuple[str, List[np.ndarray]]] = []
    for layer in net.layers:
        kind = {"LConv": "conv", "LBatchNorm": "bn"}.get(type(layer).__name__)
        if kind is not None:
            found.append((kind, [np.array(t.getdata(), dtype=np.float32) for t in eddl.getParams(layer)]))
    expected = layer_shapes(spec)
    if [k for k, _ in found] != [k for k, _ in expected]:
        raise LumbarsegError(path, f"graph has {[k for k, _ in found].count('conv')} Conv and "
                                   f"{[k for k, _ in found].count('bn')} BatchNormalization layers in an order "
                                   f"that is not the U-Net of {spec}")
    weights: List[List[np.ndarray]] = []
    pending_bias: Optional[np.ndarray] = None
    biases = iter(conv_biases)
    for n, ((kind, arrays), (_, shape)) in enumerate(zip(found, expected)):
        if tuple(arrays[0].shape) != shape:
            raise LumbarsegError(path, f"{kind} layer {n} has shape {tuple(arrays[0].shape)}, the U-Net of "
                                       f"{spec} needs {shape}")
        if kind == "conv":
            # EDDL gives every imported conv a bias slot, uninitialised where the ONNX Conv has none
            bias = arrays[1] if next(biases) and len(arrays) > 1 else np.zeros(shape[0], np.float32)
            if _has_bias(spec, n):
                weights.append([arrays[0], bias])
                pending_bias = None
            else:
                weights.append([arrays[0]])
                pending_bias = bias
        else:
            scale, shift, mean, var = arrays
            if pending_bias is not None:
                mean = mean - pending_bias
            weights.append([scale, shift, mean, var])
            pending_bias = None
    if spec.dropout > 0:
        weights[_after_dropout(spec)][0] = weights[_after_dropout(spec)][0] / (1 - spec.dropout)
    return weights


def importable_graph(path: Path) -> Tuple[bytes, List[bool]]:
    """An ONNX graph EDDL 1.1b's importer reads, and whether each Conv (in order) has a bias.

    Every Resize gets a named (empty) ``roi`` initializer: an omitted optional input (PyTorch writes '')
    crashes the importer in protobuf."""
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise LumbarsegError(path, "no such model file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise LumbarsegError(path, f"not a readable ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 1 and not node.input[1]:
            node.input[1] = node.name + "_roi" if node.name else node.output[0] + "_roi"
            graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), node.input[1]))
    biases = [len(node.input) > 2 and bool(node.input[2]) for node in graph.node if node.op_type == "Conv"]
    return model.SerializeToString(), biases


def contract_graph(data: bytes, spec: UNetSpec) -> bytes:
    """EDDL's exported graph -> the ONNX contract: input ``image``, output ``probabilities`` = Softmax(axis=1)
    at opset 13 (EDDL declares opset 11, where a Softmax flattens C*H*W), N/H/W dynamic, no Dropout (its
    inference scale moves into the next conv)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    old_input, old_output = graph.input[0].name, graph.output[0].name
    producer = next(n for n in graph.node if old_output in n.output)
    if producer.op_type != "Softmax":
        raise LumbarsegError("eddl export", f"expected the graph to end in Softmax, found {producer.op_type}")
    logits = producer.input[0]
    graph.node.remove(producer)
    initializers = {init.name: init for init in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Dropout"]:
        source, target = node.input[0], node.output[0]
        graph.node.remove(node)
        for other in graph.node:
            if target in other.input:
                other.input[:] = [source if name == target else name for name in other.input]
                if other.op_type == "Conv":
                    weight = initializers[other.input[1]]
                    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * (1 - spec.dropout),
                                                            weight.name))
    for node in graph.node:
        node.input[:] = [INPUT_NAME if name == old_input else name for name in node.input]
    graph.node.append(helper.make_node("Softmax", [logits], [OUTPUT_NAME], axis=1, name="probabilities_softmax"))
    graph.input[0].name = INPUT_NAME
    del graph.value_info[:]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                                      ["N", spec.num_classes, "H", "W"]))
    dims = graph.input[0].type.tensor_type.shape.dim
    for index, name in ((0, "N"), (2, "H"), (3, "W")):
        dims[index].Clear()
        dims[index].dim_param = name
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = ONNX_OPSET
    model.ir_version = max(model.ir_version, 7)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class DLDatasetSource:
    """Training and validation batches from pyecvl's ``DLDataset`` with the run's augmentation spec as ECVL
    containers (:mod:`lumbarseg.engines.ecvl_augment`), the same spec the portable loader runs.

    ECVL's ``LoadBatch`` fills whole batches only: training drops the last partial batch of each (shuffled)
    epoch; validation uses the largest batch size up to ``batch_size`` that divides the split, so every
    slice is scored. Shuffle and augmentation draw from ECVL's generators, seeded from (seed, epoch).
    """

    def __init__(self, dataset: Any, config: Any) -> None:
        from pyecvl import ecvl

        from lumbarseg.engines.ecvl_augment import build_dataset_augmentations
        from lumbarseg.training.trainer import sized_augmentation

        self.ecvl = ecvl
        self.seed = int(config.seed)
        self.counts = {split: len(dataset.split.get(split, [])) for split in ("training", "validation")}
        self.sizes = {"training": max(1, min(config.batch_size, self.counts["training"])),
                      "validation": max(d for d in range(1, min(config.batch_size, self.counts["validation"]) + 1)
                                        if self.counts["validation"] % d == 0)}
        specs = {split: sized_augmentation(config, split) for split in self.sizes}
        augs = build_dataset_augmentations(specs["training"], specs["validation"], None)
        # one DLDataset per split: ECVL 1.0.3's SetBatchSize refuses a batch as large as the split
        self.loaders = {split: self._open(dataset, size, augs) for split, size in self.sizes.items()}
        # ECVL sizes its tensors (resize_dims_) from the training split's augmentation; validation may differ
        # (training on crops), so each split's (H, W) is its first slice's after its own augmentation, run by the
        # portable loader, and each DLDataset is told its split's size.
        self.shapes = {split: self._output_shape(dataset, split, spec) for split, spec in specs.items()}
        for split, loader in self.loaders.items():
            loader.resize_dims_ = self.shapes[split]
        self.channels = int(self.loaders["training"].n_channels_)

    def _open(self, dataset: Any, batch_size: int, augs: Any) -> Any:
        ecvl = self.ecvl
        try:
            return ecvl.DLDataset(str(dataset.source), batch_size, augs, ecvl.ColorType.GRAY, ecvl.ColorType.GRAY)
        except RuntimeError as exc:
            raise LumbarsegError(dataset.where, f"pyecvl's DLDataset could not read it ({exc})") from None

    @staticmethod
    def _output_shape(dataset: Any, split: str, augmentation: Any) -> List[int]:
        from lumbarseg.data.loader import SliceLoader

        loader = SliceLoader(dataset, split, 1, augmentation, shuffle=False, workers=0)
        image, _ = loader.load_sample(0, 0)
        return [int(d) for d in image.shape[-2:]]

    def num_batches(self, split: str) -> int:
        return self.counts[split] // self.sizes[split]

    def batches(self, split: str, epoch: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        ecvl = self.ecvl
        kind = getattr(ecvl.SplitType, split)
        size = self.sizes[split]
        ecvl.DLDataset.SetSplitSeed(self.seed * 100003 + epoch)
        ecvl.AugmentationParam.SetSeed(self.seed * 100003 + epoch)
        loader = self.loaders[split]
        loader.SetSplit(kind)
        loader.ResetBatch(kind, split == "training")
        x = Tensor([size, self.channels] + self.shapes[split])
        y = Tensor([size, 1] + self.shapes[split])
        for _ in range(self.num_batches(split)):
            loader.LoadBatch(x, y)
            images = np.array(x.getdata(), dtype=np.float32)
            labels = np.rint(np.array(y.getdata())[:, 0]).astype(np.int64)
            yield images, labels

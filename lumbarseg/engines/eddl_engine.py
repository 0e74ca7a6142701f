"""The DeepHealth engine: the U-Net of ``networks/unet.py`` in pyeddl on CPU, CUDA GPUs, or FPGA (inference).

The net is built by :mod:`~lumbarseg.engines.eddl_net` on the computing services of
:mod:`~lumbarseg.engines.eddl_compute`; weights move between the engines through ONNX in both
directions (:mod:`lumbarseg.model.onnx_graph`).

Loss. The toolkit's loss and its gradient with respect to the logits are computed in numpy
(:mod:`~lumbarseg.engines.eddl_loss`) and handed to EDDL through its own ``softmax_cross_entropy`` path:
with a Softmax output that loss back-propagates ``(P - T) / N`` into the logits, so the soft target ``T
= P - N * (H * W) * grad`` makes EDDL back-propagate ``H * W * grad`` (for plain cross-entropy ``T`` is
the one-hot label itself). The factor ``H * W`` keeps ``T`` well conditioned in float32; the optimisers
are set up so that it cancels (SGD: learning rate / ``H * W``; Adam, RMSprop: scale-invariant, epsilon
scaled).

EDDL optimisers are not PyTorch's (documented in docs/guides/training.md): Adam puts epsilon inside the square
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

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from pyeddl import eddl
from pyeddl.tensor import Tensor

from lumbarseg.config import OPTIMIZERS, LossConfig, OptimizerConfig, unknown_optimizer
from lumbarseg.engines.base import Device, Engine
from lumbarseg.engines.eddl_compute import computing_service, fpga_net, quiet
from lumbarseg.engines.eddl_loss import loss_and_gradient
from lumbarseg.engines.eddl_net import (
    Built,
    Size,
    bin_shapes,
    build_unet,
    fix_batchnorm_gradients,
    output,
    read_weights,
    write_weights,
)
from lumbarseg.engines.registry import DEVICE_KINDS
from lumbarseg.errors import LumbarsegError
from lumbarseg.io import tensors
from lumbarseg.io.atomic import atomic_path
from lumbarseg.model import metadata
from lumbarseg.model.onnx_graph import contract_graph, read_unet_weights
from lumbarseg.networks.unet import UNetSpec

TORCH_EPS = 1e-8  # PyTorch's Adam/RMSprop epsilon, reproduced under the gradient scale
RMSPROP_RHO = 0.99  # PyTorch's RMSprop alpha
CHECKPOINT_FORMAT = "lumbarseg-eddl-checkpoint-1"


class EddlEngine(Engine):
    """The U-Net in pyeddl. ``input_size`` (H, W) fixes the first net's size (else the first batch's);
    ``mem`` is EDDL's memory level, ``lsb`` the batches between multi-GPU weight syncs."""

    name = "eddl"

    def __init__(self, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None, seed: int = 0,
                 input_size: Optional[Sequence[int]] = None, mem: str = "full_mem", lsb: int = 1) -> None:
        super().__init__(spec, device, threads, seed)
        self.mem, self.lsb = mem, lsb
        if device.kind not in DEVICE_KINDS:
            raise LumbarsegError("--device", f"unknown device {device}")
        if device.kind != "fpga":
            computing_service(device, threads, mem, lsb)  # fail now, with a clear error, if the build lacks it
        self.optimizer_config = OptimizerConfig()
        self.loss_config = LossConfig()
        self.class_weights: Optional[np.ndarray] = None
        self.architecture = spec.architecture()
        self.weights: List[List[np.ndarray]] = self.architecture.initial_weights(seed)
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
        raise unknown_optimizer(config.name)

    def _build(self, size: Size) -> Built:
        self.spec.check_input_size(size, source="image size")
        net, layers = build_unet(self.architecture, size)
        scale = float(size[0] * size[1])
        device = Device("cpu") if self.device.kind == "fpga" else self.device
        cs = computing_service(device, self.threads, self.mem, self.lsb)
        with quiet():
            eddl.build(net, self._optimizer(scale), ["softmax_cross_entropy"], ["none"], cs, False)
        built = Built(net, layers, size)
        self._write_weights(built)
        return built

    def _write_weights(self, built: Built) -> None:
        write_weights(built, self.weights)

    def _read_weights(self, built: Built) -> List[List[np.ndarray]]:
        return read_weights(built, self.architecture)

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
        if optimizer.name.lower() not in OPTIMIZERS:
            raise unknown_optimizer(optimizer.name)
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
        probs = output(net)
        value, grad = loss_and_gradient(probs, np.asarray(labels), self.loss_config, self.class_weights)
        target = probs - (images.shape[0] * size[0] * size[1]) * grad  # see the module docstring
        eddl.backward(net, [Tensor.fromarray(target.astype(np.float32, copy=False))])
        fix_batchnorm_gradients(net)
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
        return output(net)

    def _predict_net(self, size: Size) -> Any:
        if self.device.kind != "fpga" and self.train_net is not None and self.train_net.size == size:
            return self.train_net.net
        self._sync()
        cached = self.predict_nets.get(size)
        if cached is None:
            built = self._build(size)
            if self.device.kind == "fpga":
                built = Built(fpga_net(built.net, self.device), built.layers, size)
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
        expected = self.architecture.layers()
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
        found = bin_shapes(path)
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
        from lumbarseg.engines.ecvl_source import DLDatasetSource

        return DLDatasetSource(dataset, config)

    @classmethod
    def from_onnx(cls, path: Path, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None,
                  seed: int = 0, input_size: Optional[Sequence[int]] = None, **kwargs: Any) -> EddlEngine:
        """An engine with the weights of any ONNX U-Net of ``spec`` (read by structure, as the PyTorch engine
        reads them), built at (H, W) = ``input_size`` (else the metadata's ``input_size``, else 2**(depth+1)
        square); other sizes are built on demand."""
        path = Path(path)
        size = _import_size(path, spec, input_size)
        engine = cls(spec, device, threads, seed, input_size=size, **kwargs)
        weights = read_unet_weights(path, spec)
        if spec.dropout > 0:  # PyTorch's inverted dropout -> EDDL's, scaled at inference (module docstring)
            after = engine.architecture.after_dropout()
            weights[after][0] = weights[after][0] / (1 - spec.dropout)
        engine.set_weights(weights, source=str(path))
        return engine


def _import_size(path: Path, spec: UNetSpec, input_size: Optional[Sequence[int]]) -> Size:
    """The size to build an imported net at: ``input_size``, else the metadata's, else 2**(depth+1) square."""
    if input_size is None:
        try:
            input_size = metadata.read(path).input_size
        except LumbarsegError:
            input_size = None
    size = tuple(int(s) for s in input_size) if input_size else (spec.divisor * 2, spec.divisor * 2)
    spec.check_input_size(size, source=f"{path}: input size")
    return size  # type: ignore[return-value]

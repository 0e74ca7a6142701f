"""The portable engine: the U-Net of ``networks/unet.py`` in PyTorch, on CPU or CUDA.

Layer for layer what the EDDL engine builds, so weights move between them through ONNX. The
exported graph is deliberately plain, made only of ops EDDL's ONNX importer reads::

    Conv (3x3, pads 1; no bias when BN follows) -> BatchNormalization -> Relu     (x2 per level)
    MaxPool (2x2, stride 2)                                                       (encoder)
    Resize (nearest, constant roi and ``scales`` [1, 1, 2, 2]) -> Conv -> BN -> Relu (decoder up)
    Concat (axis 1, [skip, upsampled]) -> (Conv -> BN -> Relu) x2                 (decoder)
    Conv (1x1, bias) -> Softmax (axis 1)                                          (head)

at opset 13, so onnxruntime reads the Softmax over the channel axis only.
"""
from __future__ import annotations

import inspect
import io
import random
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lumbarseg.engines.base import BN_EPS, DICE_SMOOTH, ONNX_OPSET, Device, Engine, LossConfig, OptimizerConfig
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_path
from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME
from lumbarseg.networks.unet import UNetSpec

# EDDL's BatchNormalization(momentum=0.9) updates running = 0.9 * running + 0.1 * batch (bnorm.cpp,
# BN_forward); PyTorch's momentum is the weight of the batch, so 0.1 is the same rule.
BN_MOMENTUM = 0.1
CHECKPOINT_FORMAT = "lumbarseg-torch-checkpoint-1"


class ConvBlock(nn.Sequential):
    """conv3x3 -> BN -> ReLU (conv without bias when BN follows: BN's shift makes it redundant)."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        batch = norm == "batch"
        layers: List[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch)]
        if batch:
            layers.append(nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DecoderLevel(nn.Module):
    """Nearest upsampling x2 + conv block, concatenation [skip, upsampled] on channels, two blocks."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(cin, cout, norm))
        self.blocks = nn.Sequential(ConvBlock(2 * cout, cout, norm), ConvBlock(cout, cout, norm))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Logits (N, C, H, W). Modules are declared in forward order; ``from_onnx`` relies on it."""

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        f = spec.filters
        self.encoder = nn.ModuleList()
        cin = spec.in_channels
        for level in range(spec.depth):
            self.encoder.append(nn.Sequential(ConvBlock(cin, f[level], spec.norm),
                                              ConvBlock(f[level], f[level], spec.norm)))
            cin = f[level]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(ConvBlock(f[-2], f[-1], spec.norm), ConvBlock(f[-1], f[-1], spec.norm))
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList(DecoderLevel(f[level + 1], f[level], spec.norm)
                                     for level in reversed(range(spec.depth)))
        self.head = nn.Conv2d(f[0], spec.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for level, skip in zip(self.decoder, reversed(skips)):
            x = level(x, skip)
        return self.head(x)


class _Exported(nn.Module):
    """The network as exported: logits -> probabilities over the channel axis."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, loss: LossConfig,
                      class_weights: Optional[torch.Tensor],
                      reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """``ce_weight`` * cross-entropy + ``dice_weight`` * (1 - soft Dice averaged over foreground classes).

    Dice is pooled over the batch and pixels per class, so a class absent from one slice does not
    dominate the loss; computed in float32 even under autocast. ``reduce`` (distributed training) sums
    the loss's per-class sums over the ranks, making it the loss of the global batch.
    """
    logits = logits.float()
    if reduce is not None:
        from lumbarseg.engines.torch_distributed import global_loss

        return global_loss(logits, labels, loss, class_weights, reduce)
    total = logits.new_zeros(())
    if loss.ce_weight:
        total = total + loss.ce_weight * F.cross_entropy(logits, labels, weight=class_weights)
    if loss.dice_weight:
        probs = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
        total = total + loss.dice_weight * (1 - dice.mean())
    return total


def _make_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    name = config.name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise LumbarsegError("optimizer.name", f"unknown optimiser {config.name!r} (choose from adam, sgd, rmsprop)")


def _torch_device(device: Device) -> torch.device:
    if device.kind == "fpga":
        raise LumbarsegError("--device", "the PyTorch engine runs on cpu or cuda; fpga needs --engine eddl")
    if device.kind == "cuda":
        if not torch.cuda.is_available():
            raise LumbarsegError("--device", f"{device} requested but this PyTorch has no usable CUDA device")
        missing = [i for i in device.ids if i >= torch.cuda.device_count()]
        if missing:
            raise LumbarsegError("--device", f"no CUDA device {missing} (found {torch.cuda.device_count()})")
        return torch.device("cuda", device.ids[0])
    return torch.device("cpu")


class TorchEngine(Engine):
    """The U-Net in PyTorch. Deterministic on CPU for a given seed; autocast + DataParallel on CUDA."""

    name = "torch"

    def __init__(self, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None, seed: int = 0) -> None:
        super().__init__(spec, device, threads, seed)
        self.torch_device = _torch_device(device)
        if threads:
            torch.set_num_threads(int(threads))
        torch.manual_seed(seed)
        self.net = UNet(spec).to(self.torch_device)
        self.model: nn.Module = self.net
        if device.kind == "cuda" and len(device.ids) > 1:
            self.model = nn.DataParallel(self.net, device_ids=list(device.ids))
        self.amp = device.kind == "cuda"
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.loss_config = LossConfig()
        self.class_weights: Optional[torch.Tensor] = None
        self.scaler = _grad_scaler(self.amp)
        self.loss_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # set by distribute()

    def distribute(self) -> None:
        """Train as one rank of the initialised process group (``lumbarseg.engines.torch_distributed``)."""
        from lumbarseg.engines.torch_distributed import data_parallel

        self.model, self.loss_reduce = data_parallel(self.net, self.torch_device)

    # training ---------------------------------------------------------------------------------
    def configure_training(self, optimizer: OptimizerConfig, loss: LossConfig) -> None:
        if loss.class_weights is not None and len(loss.class_weights) != self.spec.num_classes:
            raise LumbarsegError("loss.class_weights", f"needs {self.spec.num_classes} values (one per class), "
                                 f"got {len(loss.class_weights)}")
        self.optimizer = _make_optimizer(self.net.parameters(), optimizer)
        self.loss_config = loss
        self.class_weights = (torch.tensor(loss.class_weights, dtype=torch.float32, device=self.torch_device)
                              if loss.class_weights is not None else None)

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> float:
        if self.optimizer is None:
            raise RuntimeError("configure_training() must be called before train_step()")
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.torch_device, non_blocking=True)
        y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).to(self.torch_device, non_blocking=True)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=self.amp) if self.amp else nullcontext():
            logits = self.model(x)
        loss = segmentation_loss(logits, y, self.loss_config, self.class_weights, self.loss_reduce)
        if self.amp:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.torch_device)
        model = self.model if self.loss_reduce is None else self.net  # DDP's forward would wait for the others
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", enabled=self.amp) if self.amp else nullcontext():
            logits = model(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def set_learning_rate(self, lr: float) -> None:
        if self.optimizer is None:
            raise RuntimeError("configure_training() must be called before set_learning_rate()")
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The network's weights and BN statistics (what ONNX carries)."""
        return self.net.state_dict()

    def get_weights(self) -> List[List[np.ndarray]]:
        """Every floating-point tensor of the state dict (weights, BN statistics), one list each (MPI averaging)."""
        return [[v.detach().cpu().numpy().copy()] for v in self.net.state_dict().values() if v.is_floating_point()]

    def set_weights(self, weights: List[List[np.ndarray]]) -> None:
        """The inverse of ``get_weights``."""
        state = self.net.state_dict()
        keys = [k for k, v in state.items() if v.is_floating_point()]
        if len(keys) != len(weights):
            raise LumbarsegError("weights", f"{len(weights)} tensors, the U-Net has {len(keys)}")
        with torch.no_grad():
            for key, (array,) in zip(keys, weights):
                state[key].copy_(torch.from_numpy(np.asarray(array)).to(state[key].dtype))

    def save_checkpoint(self, path: Path) -> None:
        """Weights, optimiser and AMP scaler state, and the RNG states, in one atomic file."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.to_dict(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict() if self.amp else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.kind == "cuda" else None},
        }
        with atomic_path(Path(path)) as tmp:
            torch.save(state, str(tmp))

    def load_checkpoint(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise LumbarsegError(path, "no such checkpoint")
        try:
            extra = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
            state = torch.load(str(path), map_location=self.torch_device, **extra)
        except Exception as exc:  # pickle/zip errors for truncated or foreign files
            raise LumbarsegError(path, f"not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise LumbarsegError(path, "not a lumbarseg PyTorch checkpoint")
        saved = UNetSpec.from_dict(state["spec"])
        if saved != self.spec:
            raise LumbarsegError(path, f"checkpoint is for {saved}, this run builds {self.spec}")
        self.net.load_state_dict(state["model"])
        if state.get("optimizer") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and self.amp:
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
        if rng.get("cuda") is not None and self.device.kind == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ONNX -------------------------------------------------------------------------------------
    def export_onnx(self, path: Path) -> None:
        """Softmax-over-channels graph at opset 13 with dynamic N, H, W (see the module docstring)."""
        net = UNet(self.spec)
        net.load_state_dict({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        exported = _Exported(net).eval()
        size = self.spec.divisor * 2
        dummy = torch.zeros(1, self.spec.in_channels, size, size)
        kwargs: Dict[str, Any] = {}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the TorchScript exporter: plain ops, no onnxscript needed
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            # Deliberate choices the exporter warns about: the legacy exporter, folding with BN preserved
            # (the module is in eval mode, so no learnable parameter is folded).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                exported, (dummy,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET, do_constant_folding=True,
                training=torch.onnx.TrainingMode.PRESERVE,  # keep BN as BatchNormalization (EVAL folds it into Conv)
                dynamic_axes={INPUT_NAME: {0: "N", 2: "H", 3: "W"}, OUTPUT_NAME: {0: "N", 2: "H", 3: "W"}},
                **kwargs,
            )
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(_plain_graph(buffer.getvalue()))

    @classmethod
    def from_onnx(cls, path: Path, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None,
                  seed: int = 0) -> TorchEngine:
        engine = cls(spec, device, threads, seed)
        weights = onnx_weights(Path(path), spec)
        engine.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        engine.net.to(engine.torch_device)
        return engine


def onnx_weights(path: Path, spec: UNetSpec) -> Dict[str, np.ndarray]:
    """A ``UNet(spec)`` state dict read from any ONNX graph with this layer structure.

    Matched by structure, not by name (EDDL names tensors its own way): the graph's Conv and
    BatchNormalization nodes, in topological order, are the network's convs and BNs in forward
    order. A conv bias in front of a BN (EDDL may write zeros) is folded into the BN's mean.
    """
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise LumbarsegError(path, "no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise LumbarsegError(path, f"not a readable ONNX model ({type(exc).__name__})") from None
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def const(name: str, what: str) -> np.ndarray:
        if name not in constants:
            raise LumbarsegError(path, f"{what} {name!r} is not a constant in the graph")
        return np.asarray(constants[name], dtype=np.float32)

    layers: List[Tuple[str, List[np.ndarray]]] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            layers.append(("conv", [const(n, "Conv weight") for n in node.input[1:] if n]))
        elif node.op_type == "BatchNormalization":
            layers.append(("bn", [const(n, "BatchNormalization parameter") for n in node.input[1:5]]))

    net = UNet(spec)
    state = net.state_dict()
    targets = _layer_targets(net)
    found = [kind for kind, _ in layers]
    if found != [kind for kind, _ in targets]:
        raise LumbarsegError(path, f"graph has {found.count('conv')} Conv and {found.count('bn')} "
                                   f"BatchNormalization layers in an order that is not the U-Net of {spec}")
    out: Dict[str, np.ndarray] = {}
    pending_bias: Optional[np.ndarray] = None
    for (kind, arrays), (_, prefix) in zip(layers, targets):
        if kind == "conv":
            weight = arrays[0]
            bias = arrays[1] if len(arrays) > 1 else None
            _check_shape(path, prefix + ".weight", weight, state)
            out[prefix + ".weight"] = weight
            if prefix + ".bias" in state:
                out[prefix + ".bias"] = bias if bias is not None else np.zeros(weight.shape[0], np.float32)
                pending_bias = None
            else:
                pending_bias = bias
        else:
            scale, shift, mean, var = arrays
            if pending_bias is not None:
                mean = mean - pending_bias
            for suffix, value in (("weight", scale), ("bias", shift), ("running_mean", mean), ("running_var", var)):
                _check_shape(path, f"{prefix}.{suffix}", value, state)
                out[f"{prefix}.{suffix}"] = value
            out[prefix + ".num_batches_tracked"] = np.zeros((), np.int64)
            pending_bias = None
    return out


def _plain_graph(data: bytes) -> bytes:
    """Constant nodes (the Resize scales) become initializers, where every ONNX importer looks; the
    Identity left by an inference-mode Dropout is dropped; Resize gets a real ``roi`` input.

    EDDL's importer deletes empty ("") inputs and then reads Resize's scales as input 2, so the
    unused roi must be a tensor: [0,0,0,0,1,1,1,1] (the whole input), as EDDL itself writes it.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    for number, node in enumerate(n for n in graph.node if n.op_type == "Resize"):
        if len(node.input) > 1 and not node.input[1]:
            roi = numpy_helper.from_array(np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32), f"resize_roi_{number}")
            graph.initializer.append(roi)
            node.input[1] = roi.name
    outputs = {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs]:
        source, target = node.input[0], node.output[0]
        graph.node.remove(node)
        for other in graph.node:
            other.input[:] = [source if name == target else name for name in other.input]
    constants = [n for n in graph.node if n.op_type == "Constant" and len(n.attribute) == 1
                 and n.attribute[0].name == "value"]
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    return model.SerializeToString()


def _layer_targets(net: UNet) -> List[Tuple[str, str]]:
    """(kind, state-dict prefix) of every conv and BN of ``net`` in forward order."""
    order: List[Tuple[str, str]] = []
    for name, module in net.named_modules():  # declaration order == forward order (see UNet)
        if isinstance(module, nn.Conv2d):
            order.append(("conv", name))
        elif isinstance(module, nn.BatchNorm2d):
            order.append(("bn", name))
    return order


def _check_shape(path: Path, key: str, value: np.ndarray, state: Dict[str, torch.Tensor]) -> None:
    expected = tuple(state[key].shape)
    if tuple(value.shape) != expected:
        raise LumbarsegError(path, f"layer {key} has shape {tuple(value.shape)}, the U-Net needs {expected}")


def _grad_scaler(enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3



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

from lumbarseg.config import LossConfig, OptimizerConfig, unknown_optimizer
from lumbarseg.engines.base import BN_EPS, DICE_SMOOTH, Device, Engine
from lumbarseg.errors import LumbarsegError
from lumbarseg.io import tensors
from lumbarseg.io.atomic import atomic_path
from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME
from lumbarseg.model.onnx_graph import ONNX_OPSET, plain_graph, read_unet_weights
from lumbarseg.networks.unet import Block, UNetSpec

# EDDL's BatchNormalization(momentum=0.9) updates running = 0.9 * running + 0.1 * batch (bnorm.cpp,
# BN_forward); PyTorch's momentum is the weight of the batch, so 0.1 is the same rule.
BN_MOMENTUM = 0.1
CHECKPOINT_FORMAT = "lumbarseg-torch-checkpoint-1"


class ConvBlock(nn.Sequential):
    """A :class:`~lumbarseg.networks.unet.Block`: conv3x3 -> BN -> ReLU (no conv bias when BN follows)."""

    def __init__(self, block: Block) -> None:
        layers: List[nn.Module] = [nn.Conv2d(block.cin, block.cout, 3, padding=1, bias=not block.batch_norm)]
        if block.batch_norm:
            layers.append(nn.BatchNorm2d(block.cout, eps=BN_EPS, momentum=BN_MOMENTUM))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DecoderLevel(nn.Module):
    """Nearest upsampling x2 + block, concatenation [skip, upsampled] on channels, two blocks."""

    def __init__(self, level: Tuple[Block, Block, Block]) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(level[0]))
        self.blocks = nn.Sequential(ConvBlock(level[1]), ConvBlock(level[2]))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Logits (N, C, H, W), built from ``spec.architecture()``. Modules are declared in forward order;
    ``from_onnx`` relies on it."""

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        arch = spec.architecture()
        self.encoder = nn.ModuleList(nn.Sequential(*(ConvBlock(b) for b in level)) for level in arch.encoder)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(*(ConvBlock(b) for b in arch.bottleneck))
        self.dropout = nn.Dropout(arch.dropout) if arch.dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList(DecoderLevel(level) for level in arch.decoder)
        self.head = nn.Conv2d(arch.head.cin, arch.head.classes, 1)

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
    raise unknown_optimizer(config.name)


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
        self.local_batch_norm = False  # distribute(batch_norm="local")

    def distribute(self, batch_norm: str = "global") -> None:
        """Train as one rank of the initialised process group (``lumbarseg.engines.torch_distributed``);
        ``batch_norm``: ``global`` (statistics of the global batch) or ``local`` (of this rank's part)."""
        from lumbarseg.engines.torch_distributed import data_parallel

        self.model, self.loss_reduce = data_parallel(self.net, self.torch_device, batch_norm)
        self.local_batch_norm = batch_norm == "local"

    def end_epoch(self) -> None:
        """Distributed with per-rank BatchNorm: average the running statistics over the ranks."""
        if self.local_batch_norm:
            from lumbarseg.engines.torch_distributed import average_buffers

            average_buffers(self.net)

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
        """Weights, optimiser and AMP scaler state, and the RNG states, in one atomic safetensors file."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.to_dict(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict() if self.amp else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.kind == "cuda" else None},
        }
        tensors.save(path, _to_numpy(state))

    def load_checkpoint(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise LumbarsegError(path, "no such checkpoint")
        state = _read_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise LumbarsegError(path, "not a lumbarseg PyTorch checkpoint")
        saved = UNetSpec.from_dict(state["spec"])
        if saved != self.spec:
            raise LumbarsegError(path, f"checkpoint is for {saved}, this run builds {self.spec}")
        self.net.load_state_dict(_to_torch(state["model"]))
        if state.get("optimizer") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(_to_torch(state["optimizer"]))
        if state.get("scaler") is not None and self.amp:
            self.scaler.load_state_dict(_to_torch(state["scaler"]))
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(_to_torch(rng["torch"]).cpu())
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
            np.random.set_state(tuple(rng["numpy"]))
        if rng.get("cuda") is not None and self.device.kind == "cuda":
            torch.cuda.set_rng_state_all([_to_torch(t) for t in rng["cuda"]])

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
            tmp.write_bytes(plain_graph(buffer.getvalue()))

    @classmethod
    def from_onnx(cls, path: Path, spec: UNetSpec, device: Device = Device(), threads: Optional[int] = None,
                  seed: int = 0) -> TorchEngine:
        engine = cls(spec, device, threads, seed)
        weights = onnx_weights(Path(path), spec)
        engine.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        engine.net.to(engine.torch_device)
        return engine


def onnx_weights(path: Path, spec: UNetSpec) -> Dict[str, np.ndarray]:
    """A ``UNet(spec)`` state dict from any ONNX U-Net of ``spec`` (read by :func:`read_unet_weights`)."""
    prefixes = [name for name, module in UNet(spec).named_modules()  # declaration order == forward order
                if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))]
    out: Dict[str, np.ndarray] = {}
    for prefix, arrays in zip(prefixes, read_unet_weights(path, spec)):
        if len(arrays) == 4:  # BN
            out.update({f"{prefix}.{suffix}": value for suffix, value in
                        zip(("weight", "bias", "running_mean", "running_var"), arrays)})
            out[prefix + ".num_batches_tracked"] = np.zeros((), np.int64)
        else:
            out.update(zip((prefix + ".weight", prefix + ".bias"), arrays))
    return out


def _grad_scaler(enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


def _map_leaves(value: Any, leaf: type, convert: Callable[[Any], Any]) -> Any:
    """``value`` with every ``leaf`` instance inside its dicts, lists and tuples replaced by ``convert(leaf)``."""
    if isinstance(value, leaf):
        return convert(value)
    if isinstance(value, dict):
        return {k: _map_leaves(v, leaf, convert) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_leaves(v, leaf, convert) for v in value)
    return value


def _to_numpy(value: Any) -> Any:
    """Tensors as numpy arrays, recursively (the checkpoint stores numpy)."""
    return _map_leaves(value, torch.Tensor, lambda t: t.detach().cpu().numpy())


def _to_torch(value: Any) -> Any:
    """numpy arrays as tensors, recursively."""
    return _map_leaves(value, np.ndarray, lambda a: torch.from_numpy(a.copy()))


def _read_checkpoint(path: Path) -> Any:
    """A safetensors checkpoint; an older PyTorch file only through ``torch.load(weights_only=True)``, whose
    unpickler builds tensors and plain containers and refuses every other global (no code runs)."""
    if tensors.kind(path) == "safetensors":
        return tensors.load(path)
    if "weights_only" not in inspect.signature(torch.load).parameters:
        raise LumbarsegError(path, "old pickled checkpoint: PyTorch >= 1.13 is needed to read it safely")
    # old checkpoints hold numpy's RNG state: allow numpy's array rebuild, nothing else
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    allowed = [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    safe = getattr(torch.serialization, "safe_globals", None)
    try:
        with safe(allowed) if safe is not None else nullcontext(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a foreign global, zip/pickle errors for broken files
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            problem = "refused: a pickle that would run code to load (nothing was executed)"
        raise LumbarsegError(path, f"not a readable checkpoint ({problem})") from None

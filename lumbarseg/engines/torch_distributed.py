"""torch.distributed for the PyTorch engine: the process group, DistributedDataParallel, global-batch statistics.

``gloo`` on CPU, ``nccl`` on CUDA (one GPU per local rank; the loop's own collectives on numpy arrays
then go through an extra ``gloo`` group). Every rank computes the loss and the BatchNorm statistics of
the *global* batch: the per-class sums they are made of (cross-entropy numerator and weight, soft-Dice
intersection and denominator; BN sum and squared deviations) are summed over the ranks with
differentiable all-reduces, so each rank's loss is the global-batch loss and DDP's gradient average is
the single-process gradient of that batch (up to float summation order). PyTorch's SyncBatchNorm is
not used because it refuses CPU tensors; :class:`GlobalBatchNorm2d` does the same on any device.

``batch_norm="local"`` (config ``distributed.batch_norm``) keeps PyTorch's BatchNorm per rank: each rank
normalises with its own part of the batch (no all-reduce in the forward pass; two per BN layer otherwise),
and the running statistics are averaged over the ranks at the end of each epoch (:func:`average_buffers`),
so every rank validates and rank 0 saves the same model. The loss stays the global-batch loss.
"""
from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from lumbarseg.engines.base import DICE_SMOOTH, LossConfig
from lumbarseg.engines.collectives import Communicator, World
from lumbarseg.errors import LumbarsegError


class TorchCommunicator(Communicator):
    """The default process group, joined from the launcher's world (timeout: ``timeout_s`` per collective)."""

    def __init__(self, world: World, device: Any, timeout_s: float) -> None:
        super().__init__(world)
        backend = self.backend = "nccl" if device.kind == "cuda" else "gloo"
        if not dist.is_available():
            raise LumbarsegError(f"{world.launcher} world", "this PyTorch build has no torch.distributed")
        if device.kind == "cuda":
            torch.cuda.set_device(device.ids[0])
        timeout = timedelta(seconds=timeout_s)
        # torchrun's agent hosts the store on MASTER_PORT: join it through env://; other launchers: rank 0 hosts it.
        init = "env://" if world.launcher == "torchrun" else f"tcp://{world.master_addr}:{world.master_port}"
        try:
            dist.init_process_group(backend, init_method=init, rank=world.rank, world_size=world.size,
                                    timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise LumbarsegError(f"{world.launcher} world of {world.size} processes",
                                 f"could not join the process group at {init} ({str(exc).splitlines()[0]})") from None
        self.group = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.array(array, copy=True))
        dist.all_reduce(tensor, group=self.group)
        return tensor.numpy()

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.world.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def close(self) -> None:
        """Nothing: the group ends with the process. ``destroy_process_group`` can deadlock (seen with torch
        2.13): gloo's destructor joins its work thread while holding the GIL that the thread needs to release
        the tensors of the last collective."""


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks, differentiable (the backward pass sums the gradients over the ranks)."""
    with warnings.catch_warnings():  # deprecated in favour of funcol, whose all_reduce is not differentiable
        warnings.simplefilter("ignore", FutureWarning)
        return differentiable_all_reduce(tensor)


def global_loss(logits: torch.Tensor, labels: torch.Tensor, loss: LossConfig, class_weights: Optional[torch.Tensor],
                 reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``torch_engine.segmentation_loss`` from sums over the ranks (one all-reduce of 2 + 2 * (C - 1) values)."""
    weights = class_weights[labels] if class_weights is not None else torch.ones_like(labels, dtype=logits.dtype)
    nll = -torch.log_softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    dims = (0, 2, 3)
    sums = reduce(torch.cat([(weights * nll).sum()[None], weights.sum()[None], (probs * onehot).sum(dims),
                             probs.sum(dims) + onehot.sum(dims)]))
    c = logits.shape[1] - 1
    dice = (2 * sums[2:2 + c] + DICE_SMOOTH) / (sums[2 + c:] + DICE_SMOOTH)
    return loss.ce_weight * sums[0] / sums[1] + loss.dice_weight * (1 - dice.mean())


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (two all-reduces per call);
    same parameters, buffers and state-dict keys, plain BatchNorm2d in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        c = self.num_features
        xf = x.float()
        # no host-device copy or sync in this method: on CUDA the kernels and all-reduces stay queued
        count = xf.new_full((1,), float(x.shape[0] * x.shape[2] * x.shape[3]))
        first = global_sum(torch.cat([xf.sum((0, 2, 3)), count]))
        total = first[c]
        mean = first[:c] / total
        centred = xf - mean[None, :, None, None]
        var = global_sum((centred * centred).sum((0, 2, 3))) / total
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var.detach() * total / (total - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def global_batch_norm(module: nn.Module) -> None:
    """Swap every BatchNorm2d of ``module`` for a GlobalBatchNorm2d sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            swapped = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
            swapped.weight, swapped.bias = child.weight, child.bias
            swapped.running_mean, swapped.running_var = child.running_mean, child.running_var
            swapped.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, swapped)
        else:
            global_batch_norm(child)


def average_buffers(net: nn.Module) -> None:
    """Replace the BatchNorm running statistics by their mean over the ranks (one all-reduce)."""
    buffers = [b for m in net.modules() if isinstance(m, nn.BatchNorm2d)
               for b in (m.running_mean, m.running_var) if b is not None]
    if not buffers:
        return
    flat = torch.cat([b.detach().double().flatten() for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    at = 0
    with torch.no_grad():
        for b in buffers:
            b.copy_(flat[at:at + b.numel()].view_as(b).to(b.dtype))
            at += b.numel()


def data_parallel(net: nn.Module, device: torch.device, batch_norm: str = "global"
                  ) -> Tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(DDP-wrapped ``net``, the loss's sum over ranks) in an initialised process group; ``batch_norm``
    ``global``: BatchNorm statistics of the global batch, ``local``: of each rank's part."""
    if batch_norm == "global":
        global_batch_norm(net)
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (BN running statistics): equal on every rank by construction (global), or averaged at the end of
    # each epoch (local): no per-step broadcast.
    with warnings.catch_warnings():  # newer PyTorch renames broadcast_buffers; the old name keeps working
        warnings.simplefilter("ignore", FutureWarning)
        model = DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
    return model, global_sum

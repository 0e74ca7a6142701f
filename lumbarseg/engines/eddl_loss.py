"""The PyTorch engine's loss and its gradient in numpy, for EDDL (whose built-in losses cannot express it).

EDDL's ``dice`` pools all channels, background included, per sample. So the loss and its gradient with
respect to the logits are computed here, exactly as :func:`lumbarseg.engines.torch_engine.segmentation_loss`
defines them, and handed to EDDL through its ``softmax_cross_entropy`` path (see
:mod:`lumbarseg.engines.eddl_engine`). Needs only numpy, so it is tested where EDDL is not installed.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from lumbarseg.config import LossConfig
from lumbarseg.engines.base import DICE_SMOOTH


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

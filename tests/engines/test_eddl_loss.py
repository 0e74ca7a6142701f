"""The EDDL engine's numpy loss and gradient (no pyeddl needed) equal the PyTorch engine's autograd."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="compares with the PyTorch engine's loss")

from lumbarseg.config import LossConfig  # noqa: E402
from lumbarseg.engines.eddl_loss import loss_and_gradient  # noqa: E402
from lumbarseg.engines.torch_engine import segmentation_loss  # noqa: E402


def batch(n=2, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, h, w), dtype=np.float32), rng.integers(0, 4, (n, h, w))


@pytest.mark.parametrize("class_weights", [None, [0.5, 1.0, 2.0, 1.5]])
def test_loss_and_gradient_match_the_torch_definition(class_weights):
    _, labels = batch()
    logits = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    config = LossConfig(ce_weight=0.7, dice_weight=1.3, class_weights=class_weights)
    weights = torch.tensor(class_weights) if class_weights else None
    expected = segmentation_loss(logits, torch.from_numpy(labels), config, weights)
    expected.backward()
    value, grad = loss_and_gradient(torch.softmax(logits, 1).detach().numpy(), labels, config,
                                    np.array(class_weights) if class_weights else None)
    assert value == pytest.approx(float(expected.detach()), abs=1e-6)
    np.testing.assert_allclose(grad, logits.grad.numpy(), atol=1e-9)

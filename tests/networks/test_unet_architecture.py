"""The U-Net written down once: the layer list every engine and the ONNX reader follow."""
from __future__ import annotations

import numpy as np
import pytest

from lumbarseg.networks.unet import UNetSpec


def test_layers_follow_the_spec_in_forward_order():
    arch = UNetSpec(depth=2, base_filters=4, num_classes=3).architecture()
    convs = [shape for kind, shape in arch.layers() if kind == "conv"]
    assert convs[:2] == [(4, 1, 3, 3), (4, 4, 3, 3)]  # first encoder level
    assert convs[4:6] == [(16, 8, 3, 3), (16, 16, 3, 3)]  # bottleneck
    assert convs[6:9] == [(8, 16, 3, 3), (8, 16, 3, 3), (8, 8, 3, 3)]  # deepest decoder level: up, concat, block
    assert convs[-1] == (3, 4, 1, 1)  # head
    assert [kind for kind, _ in arch.layers()[:4]] == ["conv", "bn", "conv", "bn"]
    assert arch.layers()[arch.after_dropout()] == ("conv", (8, 16, 3, 3))


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_biases_only_where_no_batch_norm_follows(norm):
    arch = UNetSpec(depth=1, base_filters=2, norm=norm).architecture()
    layers = arch.layers()
    biased = [arch.has_bias(i) for i, (kind, _) in enumerate(layers) if kind == "conv"]
    assert biased == ([False] * (len(biased) - 1) + [True] if norm == "batch" else [True] * len(biased))
    weights = arch.initial_weights(seed=0)
    assert [tuple(w[0].shape) for w in weights] == [shape for _, shape in layers]
    assert [len(w) for w in weights] == [(2 if arch.has_bias(i) else 1) if kind == "conv" else 4
                                         for i, (kind, _) in enumerate(layers)]


def test_initial_weights_are_pytorch_bounded_and_seeded():
    arch = UNetSpec(depth=1, base_filters=2).architecture()
    first, again, other = arch.initial_weights(1), arch.initial_weights(1), arch.initial_weights(2)
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not np.array_equal(first[0][0], other[0][0])
    assert np.abs(first[0][0]).max() <= 1 / np.sqrt(1 * 3 * 3)  # +-1/sqrt(fan_in)


def test_torch_modules_are_built_from_the_same_layer_list():
    pytest.importorskip("torch", reason="compares with the PyTorch engine's module")
    from torch import nn

    from lumbarseg.engines.torch_engine import UNet

    spec = UNetSpec(depth=2, base_filters=4, dropout=0.2)
    built = [("conv", tuple(m.weight.shape)) if isinstance(m, nn.Conv2d) else ("bn", (m.num_features,))
             for m in UNet(spec).modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert built == spec.architecture().layers()


@pytest.mark.parametrize("spec", [UNetSpec(depth=2, base_filters=4), UNetSpec(depth=1, base_filters=3, norm="none")])
def test_parameter_count_is_pytorchs(spec):
    """`lumbarseg models` reports this count: trainable weights, as PyTorch counts them (no BN running stats)."""
    pytest.importorskip("torch", reason="compares with the PyTorch engine's module")
    from lumbarseg.engines.torch_engine import UNet

    assert spec.architecture().num_parameters() == sum(p.numel() for p in UNet(spec).parameters())

"""The PyTorch engine: architecture, loss, optimisers, checkpoints, devices, determinism."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch engine needs torch")

from lumbarseg.config import LossConfig, OptimizerConfig  # noqa: E402
from lumbarseg.engines.registry import Device, get_engine  # noqa: E402
from lumbarseg.engines.torch_engine import BN_MOMENTUM, TorchEngine, UNet, segmentation_loss  # noqa: E402
from lumbarseg.errors import LumbarsegError  # noqa: E402
from lumbarseg.networks.unet import UNetSpec  # noqa: E402

SPEC = UNetSpec(depth=2, base_filters=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def batch(n=2, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, h, w), dtype=np.float32), rng.integers(0, 4, (n, h, w))


def trained(spec=SPEC, steps=2, optimizer=OptimizerConfig(lr=0.01), seed=0):
    engine = TorchEngine(spec, seed=seed)
    engine.configure_training(optimizer, LossConfig())
    x, y = batch()
    for _ in range(steps):
        engine.train_step(x, y)
    return engine


def test_get_engine_returns_the_torch_engine():
    assert get_engine("torch") is TorchEngine


def test_unet_layers_follow_the_spec():
    net = UNet(UNetSpec(depth=3, base_filters=8))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # 2 per encoder level + 2 bottleneck + 3 per decoder level, + head
    assert len(convs) == 3 * 2 + 2 + 3 * 3 + 1
    assert len(bns) == len(convs) - 1
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    assert [c.out_channels for c in convs[:8]] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert all(b.momentum == BN_MOMENTUM == 0.1 and b.eps == 1e-5 for b in bns)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)


def test_norm_none_convs_have_bias():
    net = UNet(UNetSpec(depth=2, base_filters=4, norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_loss_is_low_for_a_perfect_prediction_and_high_for_a_wrong_one():
    labels = torch.from_numpy(batch()[1])
    perfect = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 50
    wrong = torch.roll(perfect, 1, dims=1)
    config = LossConfig(ce_weight=1.0, dice_weight=1.0)
    assert float(segmentation_loss(perfect, labels, config, None)) < 1e-4
    assert float(segmentation_loss(wrong, labels, config, None)) > 2.0
    dice_only = LossConfig(ce_weight=0.0, dice_weight=1.0)
    assert float(segmentation_loss(wrong, labels, dice_only, None)) == pytest.approx(1.0, abs=1e-4)


def test_class_weights_change_the_loss_and_are_checked():
    x, y = batch()
    logits = torch.randn(2, 4, 32, 32)
    labels = torch.from_numpy(y)
    plain = segmentation_loss(logits, labels, LossConfig(dice_weight=0.0), None)
    weighted = segmentation_loss(logits, labels, LossConfig(dice_weight=0.0), torch.tensor([0.1, 1.0, 1.0, 5.0]))
    assert float(plain) != pytest.approx(float(weighted))
    engine = TorchEngine(SPEC)
    with pytest.raises(LumbarsegError, match="class_weights"):
        engine.configure_training(OptimizerConfig(), LossConfig(class_weights=[1.0, 2.0]))


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_each_optimiser_lowers_the_loss_on_a_fixed_batch(name):
    engine = TorchEngine(SPEC)
    engine.configure_training(OptimizerConfig(name=name, lr=0.01), LossConfig())
    x, y = batch()
    losses = [engine.train_step(x, y) for _ in range(8)]
    assert losses[-1] < losses[0]


def test_set_learning_rate_reaches_the_optimiser():
    engine = trained(steps=0)
    engine.set_learning_rate(0.123)
    assert all(group["lr"] == 0.123 for group in engine.optimizer.param_groups)


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    a, b, c = trained(seed=3), trained(seed=3), trained(seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_checkpoint_restores_weights_optimiser_and_rng(tmp_path):
    engine = trained()
    engine.save_checkpoint(tmp_path / "engine.ckpt")
    expected_next = torch.rand(3)
    x, y = batch(seed=1)
    loss_after = engine.train_step(x, y)
    restored = TorchEngine(SPEC, seed=99)
    restored.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    restored.load_checkpoint(tmp_path / "engine.ckpt")
    assert torch.equal(torch.rand(3), expected_next)
    assert restored.train_step(x, y) == loss_after  # same weights, same Adam moments
    for key, value in engine.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    engine = TorchEngine(SPEC)
    with pytest.raises(LumbarsegError, match="bad.ckpt: not a readable checkpoint"):
        engine.load_checkpoint(tmp_path / "bad.ckpt")
    trained().save_checkpoint(tmp_path / "good.ckpt")
    with pytest.raises(LumbarsegError, match="checkpoint is for"):
        TorchEngine(UNetSpec(depth=2, base_filters=8)).load_checkpoint(tmp_path / "good.ckpt")
    with pytest.raises(LumbarsegError, match="no such checkpoint"):
        engine.load_checkpoint(tmp_path / "missing.ckpt")


def test_threads_are_honoured():
    TorchEngine(SPEC, threads=1)
    assert torch.get_num_threads() == 1


def test_fpga_and_missing_cuda_are_clear_errors():
    with pytest.raises(LumbarsegError, match="fpga needs --engine eddl"):
        TorchEngine(SPEC, Device("fpga"))
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(LumbarsegError, match="no usable CUDA"):
        TorchEngine(SPEC, Device("cuda", (0,)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_trains_and_predicts():
    engine = TorchEngine(SPEC, Device("cuda", (0,)))
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    x, y = batch()
    losses = [engine.train_step(x, y) for _ in range(5)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert engine.predict(x).shape == (2, 4, 32, 32)

"""The engine interface, asserted for every installed engine alike (torch always here; eddl where pyeddl imports)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lumbarseg.config import LossConfig, OptimizerConfig
from lumbarseg.engines.registry import get_engine
from lumbarseg.errors import LumbarsegError
from lumbarseg.networks.unet import UNetSpec

SPEC = UNetSpec(depth=2, base_filters=4)
ENGINES = [pytest.param("torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                          reason="torch not installed")),
           pytest.param("eddl", marks=pytest.mark.skipif(importlib.util.find_spec("pyeddl") is None,
                                                         reason="pyeddl not installed (pip install lumbarseg[eddl])"))]
pytestmark = [pytest.mark.parametrize("name", ENGINES), pytest.mark.usefixtures("one_thread")]


def batch(n=2, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, h, w), dtype=np.float32), rng.integers(0, 4, (n, h, w))


def trained(name: str, steps: int = 3, spec: UNetSpec = SPEC):
    engine = get_engine(name)(spec, seed=1)
    engine.configure_training(OptimizerConfig(name="sgd", lr=0.05), LossConfig())
    x, y = batch()
    losses = [engine.train_step(x, y) for _ in range(steps)]
    return engine, losses


def test_predicts_softmax_probabilities_for_any_divisible_size(name):
    engine = get_engine(name)(SPEC)
    assert engine.name == name
    for h, w in ((32, 48), (16, 16)):
        probs = engine.predict(batch(3, h, w)[0])
        assert probs.shape == (3, 4, h, w) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_training_lowers_the_loss_on_a_fixed_batch(name):
    _, losses = trained(name, steps=6)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_checkpoint_restores_the_weights(name, tmp_path):
    engine, _ = trained(name)
    x = batch(1, 32, 32, seed=5)[0]
    before = engine.predict(x)
    engine.save_checkpoint(tmp_path / "state.ckpt")
    engine.train_step(*batch(seed=7))
    assert np.abs(engine.predict(x) - before).max() > 1e-6
    engine.load_checkpoint(tmp_path / "state.ckpt")
    np.testing.assert_allclose(engine.predict(x), before, atol=1e-5)
    with pytest.raises(LumbarsegError, match="no such checkpoint"):
        engine.load_checkpoint(tmp_path / "missing")


def test_onnx_export_imports_back_and_runs_the_same_in_onnxruntime(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    engine, _ = trained(name)
    engine.export_onnx(tmp_path / "m.onnx")
    x = batch(2, 32, 48, seed=3)[0]
    expected = engine.predict(x)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(["probabilities"], {"image": x})[0] - expected).max() < 1e-4
    loaded = get_engine(name).from_onnx(tmp_path / "m.onnx", SPEC)
    assert np.abs(loaded.predict(x) - expected).max() < 1e-4


def test_onnx_of_another_architecture_or_no_model_is_a_clear_error(name, tmp_path):
    engine = get_engine(name)(SPEC)
    engine.export_onnx(tmp_path / "m.onnx")
    cls = get_engine(name)
    with pytest.raises(LumbarsegError, match="not the U-Net"):
        cls.from_onnx(tmp_path / "m.onnx", UNetSpec(depth=3, base_filters=4))
    with pytest.raises(LumbarsegError, match="m.onnx.*shape"):
        cls.from_onnx(tmp_path / "m.onnx", UNetSpec(depth=2, base_filters=8))
    with pytest.raises(LumbarsegError, match="no such model file"):
        cls.from_onnx(tmp_path / "missing.onnx", SPEC)
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(LumbarsegError, match="bad.onnx: not a readable ONNX model"):
        cls.from_onnx(tmp_path / "bad.onnx", SPEC)


def test_bad_training_configuration_is_a_clear_error(name):
    engine = get_engine(name)(SPEC)
    with pytest.raises(RuntimeError, match="configure_training"):
        engine.train_step(*batch())
    with pytest.raises(LumbarsegError, match="class_weights"):
        engine.configure_training(OptimizerConfig(), LossConfig(class_weights=[1.0, 2.0]))
    with pytest.raises(LumbarsegError, match="unknown optimiser 'lion'.*adam, sgd, rmsprop"):
        engine.configure_training(OptimizerConfig(name="lion"), LossConfig())
        engine.train_step(*batch())

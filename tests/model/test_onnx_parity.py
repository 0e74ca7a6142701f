"""One ONNX contract, three runtimes: PyTorch, EDDL (the real pyeddl) and onnxruntime agree within 1e-4."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyeddl", reason="pyeddl not installed (DeepHealth extra: pip install lumbarseg[eddl])")
torch = pytest.importorskip("torch", reason="parity with the PyTorch engine needs torch")
ort = pytest.importorskip("onnxruntime", reason="parity with onnxruntime needs onnxruntime")

from lumbarseg.config import LossConfig, OptimizerConfig  # noqa: E402
from lumbarseg.engines.eddl_engine import EddlEngine  # noqa: E402
from lumbarseg.engines.torch_engine import TorchEngine  # noqa: E402
from lumbarseg.errors import LumbarsegError  # noqa: E402
from lumbarseg.model import metadata  # noqa: E402
from lumbarseg.networks.unet import UNetSpec  # noqa: E402

SPEC = UNetSpec(depth=2, base_filters=4)
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def images(n=2, h=32, w=32, seed=0):
    return np.random.default_rng(seed).random((n, 1, h, w), dtype=np.float32)


def labels(n=2, h=32, w=32, seed=0, classes=4):
    return np.random.default_rng(seed + 1).integers(0, classes, (n, h, w))


def onnxruntime(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def max_diff(a, b):
    return float(np.abs(a - b).max())


def trained_torch(spec, path, steps=2):
    engine = TorchEngine(spec, seed=3)
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    for _ in range(steps):  # moves BN statistics and weights away from their initial values
        engine.train_step(images(), labels(classes=spec.num_classes))
    engine.export_onnx(path)
    return engine


@pytest.mark.parametrize("spec", [SPEC, UNetSpec(depth=2, base_filters=4, dropout=0.3),
                                  UNetSpec(depth=1, base_filters=4, norm="none", num_classes=3)])
def test_torch_export_runs_the_same_in_eddl_and_onnxruntime(tmp_path, spec):
    path = tmp_path / "torch.onnx"
    torch_engine = trained_torch(spec, path)
    eddl_engine = EddlEngine.from_onnx(path, spec, input_size=(32, 32))
    for x in (images(), images(3, 64, 48, seed=5)):  # the second size makes EDDL rebuild its net
        reference = torch_engine.predict(x)
        assert max_diff(eddl_engine.predict(x), reference) < TOL
        assert max_diff(onnxruntime(path, x), reference) < TOL


@pytest.mark.parametrize("spec", [SPEC, UNetSpec(depth=2, base_filters=4, dropout=0.3)])
def test_eddl_export_meets_the_contract_and_runs_the_same_everywhere(tmp_path, spec):
    engine = EddlEngine(spec, threads=1)
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    for _ in range(2):
        engine.train_step(images(), labels())
    path = tmp_path / "eddl.onnx"
    engine.export_onnx(path)
    meta = metadata.ModelMetadata(classes=["background", "vertebra", "disc", "canal"][:spec.num_classes],
                                  colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]][:spec.num_classes],
                                  architecture=spec.to_dict(), spacing=[1.0, 1.0], input_size=[32, 32], engine="eddl")
    metadata.embed(path, meta)  # check_graph: names, rank, dynamic N/H/W, channel count
    torch_engine = TorchEngine.from_onnx(path, spec)
    for x in (images(), images(3, 64, 48, seed=5)):
        reference = engine.predict(x)
        ort_probs = onnxruntime(path, x)
        assert max_diff(ort_probs, reference) < TOL
        np.testing.assert_allclose(ort_probs.sum(axis=1), 1.0, atol=1e-5)  # channel softmax, not C*H*W
        assert max_diff(torch_engine.predict(x), reference) < TOL
    assert EddlEngine.from_onnx(path, spec).predict(images()).shape == (2, spec.num_classes, 32, 32)


def test_torch_model_continues_training_in_eddl(tmp_path):
    path = tmp_path / "torch.onnx"
    trained_torch(SPEC, path)
    engine = EddlEngine.from_onnx(path, SPEC, input_size=(32, 32))
    before = engine.get_weights()
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    x, y = images(seed=9), labels(seed=9)
    losses = [engine.train_step(x, y) for _ in range(3)]
    assert losses[-1] != losses[0]
    assert not np.allclose(engine.get_weights()[0][0], before[0][0])
    again = tmp_path / "again.onnx"
    engine.export_onnx(again)
    assert max_diff(onnxruntime(again, x), engine.predict(x)) < TOL
    assert max_diff(TorchEngine.from_onnx(again, SPEC).predict(x), engine.predict(x)) < TOL


def test_corrupt_or_foreign_onnx_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(LumbarsegError, match="corrupt.onnx.*not a readable ONNX model"):
        EddlEngine.from_onnx(corrupt, SPEC)
    with pytest.raises(LumbarsegError, match="missing.onnx.*no such model"):
        EddlEngine.from_onnx(tmp_path / "missing.onnx", SPEC)
    other = tmp_path / "other.onnx"
    trained_torch(UNetSpec(depth=2, base_filters=8), other, steps=0)
    with pytest.raises(LumbarsegError, match="other.onnx.*shape"):
        EddlEngine.from_onnx(other, SPEC)

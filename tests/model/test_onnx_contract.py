"""The ONNX contract of the PyTorch engine: a plain graph EDDL can import, onnxruntime parity, import back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch engine needs torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from lumbarseg.config import LossConfig, OptimizerConfig  # noqa: E402
from lumbarseg.engines.torch_engine import TorchEngine  # noqa: E402
from lumbarseg.errors import LumbarsegError  # noqa: E402
from lumbarseg.model import metadata  # noqa: E402
from lumbarseg.networks.unet import UNetSpec  # noqa: E402

SPEC = UNetSpec(depth=2, base_filters=4)
PLAIN_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "Resize", "Concat", "Softmax"}


@pytest.fixture(scope="module")
def engine():
    """Trained a few steps so BN statistics and weights are far from their initial values."""
    torch.set_num_threads(1)
    engine = TorchEngine(SPEC, seed=5)
    engine.configure_training(OptimizerConfig(lr=0.05), LossConfig())
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 32, 32), dtype=np.float32) * 3 + 1
    y = rng.integers(0, 4, (4, 32, 32))
    for _ in range(5):
        engine.train_step(x, y)
    return engine


@pytest.fixture(scope="module")
def exported(engine, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    engine.export_onnx(path)
    return path


def images(n, h, w, seed=1):
    return np.random.default_rng(seed).random((n, 1, h, w), dtype=np.float32) * 3 + 1


def test_graph_is_plain_for_eddl(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert {op.version for op in model.opset_import if op.domain in ("", "ai.onnx")} == {13}
    assert {node.op_type for node in model.graph.node} == PLAIN_OPS
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize":
            assert attrs["mode"] == b"nearest"
            assert len(node.input) == 3, "scales, never computed sizes"
            assert node.input[1] in inits, "EDDL drops empty inputs, then misreads the scales"
            np.testing.assert_array_equal(inits[node.input[2]], [1, 1, 2, 2])
        elif node.op_type in ("Concat", "Softmax"):
            assert attrs["axis"] == 1
    assert [node.op_type for node in model.graph.node].count("BatchNormalization") == 12


def test_export_passes_the_metadata_contract(exported, tmp_path):
    meta = metadata.ModelMetadata(classes=["background", "vertebra", "disc", "canal"],
                                  colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                                  architecture=SPEC.to_dict(), spacing=[0.9, 0.9], input_size=[32, 32], engine="torch")
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(exported.read_bytes())
    metadata.embed(copy, meta)  # runs onnx.checker and the name/rank/dynamic-axes checks
    assert metadata.read(copy) == meta


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 48, 64), (2, 16, 80)])
def test_onnxruntime_matches_torch_within_1e4(engine, exported, shape):
    x = images(*shape)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": x})[0]
    expected = engine.predict(x)
    assert got.shape == (shape[0], 4) + shape[1:]
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_from_onnx_reproduces_the_engine(engine, exported):
    loaded = TorchEngine.from_onnx(exported, SPEC)
    x = images(2, 32, 48)
    assert np.abs(loaded.predict(x) - engine.predict(x)).max() < 1e-6


def test_from_onnx_matches_by_structure_not_names_and_folds_conv_bias(engine, exported, tmp_path):
    """EDDL-style file: other tensor names, and a conv bias in front of each BN (folded into its mean)."""
    model = onnx.load(str(exported))
    graph = model.graph
    rename = {init.name: f"eddl_param_{i}" for i, init in enumerate(graph.initializer)}
    for init in graph.initializer:
        init.name = rename[init.name]
    producers = {node.output[0]: node for node in graph.node}
    rng = np.random.default_rng(3)
    for i, node in enumerate(graph.node):
        node.name = f"layer{i}"
        node.input[:] = [rename.get(name, name) for name in node.input]
        if node.op_type == "BatchNormalization":
            conv = producers[node.input[0]]
            mean_init = next(t for t in graph.initializer if t.name == node.input[3])
            mean = numpy_helper.to_array(mean_init)
            bias = rng.normal(size=mean.shape).astype(np.float32)
            mean_init.CopyFrom(numpy_helper.from_array(mean + bias, mean_init.name))
            graph.initializer.append(numpy_helper.from_array(bias, f"bias_{i}"))
            conv.input.append(f"bias_{i}")
    path = tmp_path / "eddl_like.onnx"
    onnx.save(model, str(path))
    x = images(2, 32, 32)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(reference - engine.predict(x)).max() < 1e-4  # the edit kept the function
    loaded = TorchEngine.from_onnx(path, SPEC)
    assert np.abs(loaded.predict(x) - reference).max() < 1e-4


def test_from_onnx_rejects_other_architectures_and_corrupt_files(exported, tmp_path):
    with pytest.raises(LumbarsegError, match="not the U-Net"):
        TorchEngine.from_onnx(exported, UNetSpec(depth=3, base_filters=4))
    with pytest.raises(LumbarsegError, match="shape"):
        TorchEngine.from_onnx(exported, UNetSpec(depth=2, base_filters=8))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(exported.read_bytes()[:1000])
    with pytest.raises(LumbarsegError, match="corrupt.onnx: not a readable ONNX model"):
        TorchEngine.from_onnx(corrupt, SPEC)
    with pytest.raises(LumbarsegError, match="no such model file"):
        TorchEngine.from_onnx(tmp_path / "missing.onnx", SPEC)


def test_dropout_does_not_reach_the_exported_graph(tmp_path):
    spec = UNetSpec(depth=2, base_filters=4, dropout=0.3)
    engine = TorchEngine(spec)
    engine.export_onnx(tmp_path / "d.onnx")
    assert {n.op_type for n in onnx.load(str(tmp_path / "d.onnx")).graph.node} == PLAIN_OPS
    x = images(1, 32, 32)
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": x})[0] - engine.predict(x)).max() < 1e-4


def test_real_eddl_imports_the_export_and_agrees_within_1e4(engine, exported, tmp_path):
    """pyeddl's import_net_from_onnx_file reads the graph; EDDL's own ONNX loads back into the engine."""
    eddl = pytest.importorskip("pyeddl.eddl", reason="pyeddl is not installed")
    from pyeddl.tensor import Tensor

    x = images(2, 32, 32)
    net = eddl.import_net_from_onnx_file(str(exported), [1, 32, 32])
    eddl.build(net, eddl.adam(0.001), ["softmax_cross_entropy"], ["categorical_accuracy"], eddl.CS_CPU(1), False)
    eddl.set_mode(net, 0)
    got = np.array(eddl.predict(net, [Tensor.fromarray(x)])[0]).reshape(2, 4, 32, 32)
    expected = engine.predict(x)
    assert np.abs(got - expected).max() < 1e-4
    eddl.save_net_to_onnx_file(net, str(tmp_path / "eddl.onnx"))
    back = TorchEngine.from_onnx(tmp_path / "eddl.onnx", SPEC)
    assert np.abs(back.predict(x) - expected).max() < 1e-4

"""The EDDL engine against the real pyeddl: training, checkpoints, devices, DLDataset feeding, CLI run."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyeddl", reason="pyeddl not installed (DeepHealth extra: pip install lumbarseg[eddl])")

from synthetic_training import TINY_CONFIG, make_dataset, tiny_config  # noqa: E402

from lumbarseg.config import LossConfig, OptimizerConfig  # noqa: E402
from lumbarseg.engines.eddl_engine import EddlEngine, eddl  # noqa: E402
from lumbarseg.engines.registry import Device, get_engine  # noqa: E402
from lumbarseg.errors import LumbarsegError  # noqa: E402
from lumbarseg.networks.unet import UNetSpec  # noqa: E402

SPEC = UNetSpec(depth=2, base_filters=4)


def batch(n=2, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, h, w), dtype=np.float32), rng.integers(0, 4, (n, h, w))


def test_registered_and_architecture():
    assert get_engine("eddl") is EddlEngine
    engine = EddlEngine(SPEC)
    weights = engine.get_weights()
    assert [tuple(w[0].shape) for w in weights] == [shape for _, shape in SPEC.architecture().layers()]
    x, _ = batch(3, 32, 48)
    probs = engine.predict(x)
    assert probs.shape == (3, 4, 32, 48)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax over the channel axis only


def test_sgd_steps_match_the_torch_engine(tmp_path):
    """Same weights, batch and SGD: EDDL's steps (loss through the soft target, BN gradient fix) equal PyTorch's."""
    torch = pytest.importorskip("torch", reason="compares with the PyTorch engine")
    from lumbarseg.engines.torch_engine import TorchEngine

    torch.set_num_threads(1)
    eddl_engine = EddlEngine(SPEC, threads=1, seed=1)
    eddl_engine.export_onnx(tmp_path / "start.onnx")
    torch_engine = TorchEngine.from_onnx(tmp_path / "start.onnx", SPEC)
    optimizer = OptimizerConfig(name="sgd", lr=0.05, momentum=0.9)
    for engine in (eddl_engine, torch_engine):
        engine.configure_training(optimizer, LossConfig())
    x, y = batch()
    for _ in range(3):
        assert eddl_engine.train_step(x, y) == pytest.approx(torch_engine.train_step(x, y), abs=1e-5)
    eddl_engine.export_onnx(tmp_path / "after.onnx")
    after = TorchEngine.from_onnx(tmp_path / "after.onnx", SPEC).state_dict()
    for key, value in torch_engine.state_dict().items():
        if key.endswith(("weight", "bias")):
            np.testing.assert_allclose(after[key].numpy(), value.numpy(), atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_training_changes_weights_and_lowers_loss(name):
    engine = EddlEngine(SPEC, threads=1)
    engine.configure_training(OptimizerConfig(name=name, lr=0.01), LossConfig())
    before = engine.get_weights()
    x, y = batch()
    losses = [engine.train_step(x, y) for _ in range(4)]
    assert losses[-1] < losses[0]
    assert not np.allclose(engine.get_weights()[0][0], before[0][0])
    engine.set_learning_rate(0.001)
    assert np.isfinite(engine.train_step(x, y))


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    engine = EddlEngine(SPEC, threads=1)
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    x, y = batch()
    engine.train_step(x, y)
    engine.save_checkpoint(tmp_path / "ck.bin")
    restored = EddlEngine(SPEC, threads=1, seed=7)
    restored.load_checkpoint(tmp_path / "ck.bin")
    np.testing.assert_array_equal(restored.predict(x), engine.predict(x))
    with pytest.raises(LumbarsegError, match="ck.bin.*not an EDDL checkpoint"):
        EddlEngine(UNetSpec(depth=2, base_filters=8)).load_checkpoint(tmp_path / "ck.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "ck.bin").read_bytes()[:-10])
    with pytest.raises(LumbarsegError, match="cut.bin"):
        restored.load_checkpoint(tmp_path / "cut.bin")
    with pytest.raises(LumbarsegError, match="no such checkpoint"):
        restored.load_checkpoint(tmp_path / "missing.bin")
    from lumbarseg.io import tensors

    assert tensors.kind(tmp_path / "ck.bin") == "safetensors"  # never a format that runs code on load


def test_checkpoint_of_an_earlier_version_still_loads(tmp_path):
    """EDDL ``bin`` files (plain tensors) written before the safetensors format are still read."""
    engine = EddlEngine(SPEC, threads=1)
    engine.configure_training(OptimizerConfig(lr=0.01), LossConfig())
    x, y = batch()
    engine.train_step(x, y)
    built = engine._reference_net()
    engine._write_weights(built)
    eddl.save(built.net, str(tmp_path / "old.bin"), "bin")
    restored = EddlEngine(SPEC, threads=1, seed=7)
    restored.load_checkpoint(tmp_path / "old.bin")
    np.testing.assert_array_equal(restored.predict(x), engine.predict(x))


def test_devices_this_build_lacks_give_clear_errors():
    with pytest.raises(LumbarsegError, match="not built for this target"):
        EddlEngine(SPEC, Device("cuda", (0, 1)))
    fpga = EddlEngine(SPEC, Device("fpga"))
    with pytest.raises(LumbarsegError, match="inference only"):
        fpga.configure_training(OptimizerConfig(), LossConfig())
    with pytest.raises(LumbarsegError, match="not built for this target"):
        fpga.predict(batch()[0])


def test_bad_configuration():
    engine = EddlEngine(SPEC)
    with pytest.raises(LumbarsegError, match="weight_decay"):
        engine.configure_training(OptimizerConfig(weight_decay=1e-4), LossConfig())
    with pytest.raises(LumbarsegError, match="class_weights"):
        engine.configure_training(OptimizerConfig(), LossConfig(class_weights=[1.0, 2.0]))
    with pytest.raises(LumbarsegError, match="divisible"):
        engine.predict(np.zeros((1, 1, 30, 32), np.float32))


def test_dldataset_source_matches_the_portable_loader(tmp_path):
    pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed")
    from lumbarseg.data.deephealth_yaml import load_dataset
    from lumbarseg.engines.ecvl_source import DLDatasetSource
    from lumbarseg.training.sources import SliceLoaderSource

    ds = load_dataset(make_dataset(tmp_path / "data", n_train=5, n_val=3))
    config = tiny_config(batch_size=2)
    source = EddlEngine.batch_source(ds, config)
    assert isinstance(source, DLDatasetSource)
    assert source.num_batches("training") == 2  # 5 slices, whole batches of 2
    assert source.num_batches("validation") == 3  # batch size 1 divides 3: every slice scored
    images, labels = zip(*source.batches("validation", 0))
    portable = list(SliceLoaderSource(ds, config).batches("validation", 0))
    np.testing.assert_allclose(np.concatenate(images), np.concatenate([b[0] for b in portable]), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(labels), np.concatenate([b[1] for b in portable]))
    x, y = next(iter(source.batches("training", 0)))
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert y.shape == (2, 32, 32) and set(np.unique(y)) <= {0, 1, 2, 3}



def test_dldataset_source_trains_on_crops_and_validates_whole_slices(tmp_path):
    pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed")
    from lumbarseg.data.deephealth_yaml import load_dataset

    ds = load_dataset(make_dataset(tmp_path / "data", n_train=4, n_val=2))
    crop = 'AugRandomCrop size=(16,24) border_type="constant" border_value=0'  # (width, height)
    source = EddlEngine.batch_source(ds, tiny_config(batch_size=2, **{"augmentation.training": crop}))
    x, y = next(iter(source.batches("training", 0)))
    assert x.shape == (2, 1, 24, 16) and y.shape == (2, 24, 16)
    x, y = next(iter(source.batches("validation", 0)))
    assert x.shape == (2, 1, 32, 32) and y.shape == (2, 32, 32)


def test_dldataset_source_feeds_25d_samples_like_the_portable_loader(tmp_path):
    """ECVL stacks a sample's locations as channels (ColorType none): the same (N, 3, H, W) batches."""
    pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed")
    from lumbarseg.data.context import write_with_slice_channels
    from lumbarseg.engines.ecvl_source import DLDatasetSource
    from lumbarseg.training.sources import SliceLoaderSource

    flat = make_dataset(tmp_path / "data", n_train=4, n_val=4, per_patient=4)
    ds = write_with_slice_channels(flat, tmp_path / "data" / "ctx.yml", [-1, 0, 1])
    config = tiny_config(batch_size=2, **{"model.in_channels": 3})
    source = EddlEngine.batch_source(ds, config)
    assert isinstance(source, DLDatasetSource) and source.channels == 3
    images, labels = zip(*source.batches("validation", 0))
    portable = list(SliceLoaderSource(ds, config).batches("validation", 0))
    assert np.concatenate(images).shape == (4, 3, 32, 32)
    np.testing.assert_allclose(np.concatenate(images), np.concatenate([b[0] for b in portable]), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(labels), np.concatenate([b[1] for b in portable]))
    x, _ = next(iter(source.batches("training", 0)))
    assert x.shape == (2, 3, 32, 32)


def test_eddl_fine_tunes_an_inflated_2d_model_on_25d_data(tmp_path):
    pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed")
    from lumbarseg.data.context import write_with_slice_channels
    from lumbarseg.model import metadata
    from lumbarseg.training.trainer import train

    flat = make_dataset(tmp_path / "data", n_train=4, n_val=4, per_patient=4)
    ctx = tmp_path / "data" / "ctx.yml"
    write_with_slice_channels(flat, ctx, [-1, 0, 1])
    train(flat, tiny_config(epochs=1), tmp_path / "flat", engine="eddl", progress=False)
    config = tiny_config(epochs=1, **{"model.in_channels": 3})
    result = train(ctx, config, tmp_path / "ctx", engine="eddl", init=tmp_path / "flat" / "best.onnx", progress=False)
    assert result.epochs_done == 1
    meta = metadata.read(tmp_path / "ctx" / "best.onnx")
    assert meta.engine == "eddl" and meta.spec.in_channels == 3 and meta.slice_offsets == [-2.5, 0.0, 2.5]


def test_cli_trains_one_epoch_with_eddl(tmp_path, capsys):
    from lumbarseg.cli import main
    from lumbarseg.model import metadata

    dataset = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--engine", "eddl",
                 "--out", str(run), "--epochs", "1", "--no-progress"]) == 0
    assert "1 epochs" in capsys.readouterr().out
    assert len(json.loads((run / "log.json").read_text())["epochs"]) == 1
    meta = metadata.read(run / "best.onnx")
    assert meta.engine == "eddl" and meta.spec == tiny_config().spec(4)
    assert main(["export", str(run), "-o", str(tmp_path / "last.onnx"), "--checkpoint", "last"]) == 0
    metadata.read(tmp_path / "last.onnx")


def test_cli_cuda_on_a_cpu_build_is_a_clear_error(tmp_path, capsys):
    from lumbarseg.cli import main

    dataset = make_dataset(tmp_path / "data", n_train=2, n_val=1)
    code = main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--engine", "eddl",
                 "--device", "cuda", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "not built for this target" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())

"""The experiment config and the engine-agnostic training loop (PyTorch engine, tiny synthetic data)."""
from __future__ import annotations

import csv
import json
import socket

import numpy as np
import pytest
import yaml

from lumbarseg.config import ExperimentConfig, ScheduleConfig, config_from_dict, load_config
from lumbarseg.errors import LumbarsegError

torch = pytest.importorskip("torch", reason="training tests use the PyTorch engine")

from synthetic_training import CLASSES, TINY_CONFIG, make_dataset, tiny_config  # noqa: E402

from lumbarseg.config import sized_augmentation  # noqa: E402
from lumbarseg.model import metadata  # noqa: E402
from lumbarseg.training import trainer  # noqa: E402
from lumbarseg.training.sources import SliceLoaderSource  # noqa: E402
from lumbarseg.training.trainer import resume, train, validate  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def model_state(path):
    from lumbarseg.io import tensors

    return {k: torch.from_numpy(v) for k, v in tensors.load(path)["model"].items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- config -----------------------------------------------------------------------------------


def test_config_file_overrides_and_yaml_round_trip():
    config = load_config(TINY_CONFIG, {"epochs": 7, "optimizer.lr": 0.5, "early_stopping.patience": 3})
    assert (config.epochs, config.optimizer.lr, config.early_stopping.patience) == (7, 0.5, 3)
    assert config.model.depth == 2 and config.input_size == (32, 32)
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config
    resolved = config.with_classes(CLASSES, "ds.yml")
    assert resolved.spec().num_classes == 4
    assert config_from_dict(yaml.safe_load(resolved.to_yaml())) == resolved
    assert load_config(None) == ExperimentConfig()


@pytest.mark.parametrize("data, message", [
    ({"epoch": 3}, "unknown key epoch (did you mean epochs?)"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr: expected a number"),
    ({"optimizer": {"name": "adamw"}}, "optimizer.name: unknown optimiser 'adamw'"),
    ({"schedule": {"name": "linear"}}, "schedule.name: unknown schedule"),
    ({"model": {"depth": 3}, "input_size": [36, 32]}, "not divisible by 2**depth = 8"),
    ({"input_size": [32]}, "input_size: expected a list of 2 values"),
    ({"batch_size": 0}, "batch_size: must be >= 1"),
    ({"model": {"norm": "group"}}, "unknown normalisation"),
    ({"early_stopping": {"metric": "val_loss"}}, "early_stopping.metric: unknown metric"),
    ({"augmentation": {"training": "AugRotat angle=[-5,5]"}}, "augmentation.training"),
    ({"augmentation": {"test": "AugFlip p=0.5"}}, "augmentation.test: unknown split"),
])
def test_bad_config_values_name_the_key(data, message):
    with pytest.raises(LumbarsegError) as info:
        config_from_dict(data, "exp.yml")
    assert str(info.value).startswith("exp.yml") and message in str(info.value)


def test_config_classes_must_match_the_dataset():
    config = ExperimentConfig(classes=["background", "vertebra"])
    with pytest.raises(LumbarsegError, match="disagree"):
        config.with_classes(CLASSES, "ds.yml")


def test_schedules():
    cosine = ScheduleConfig(name="cosine", min_lr=0.1)
    assert cosine.lr_at(1.0, 0, 10) == pytest.approx(1.0)
    assert cosine.lr_at(1.0, 5, 10) == pytest.approx(0.55)
    assert cosine.lr_at(1.0, 10, 10) == pytest.approx(0.1)
    assert ScheduleConfig(name="step", step_epochs=2, gamma=0.5).lr_at(1.0, 4.5, 10) == pytest.approx(0.25)
    assert ScheduleConfig(name="poly", power=1.0).lr_at(2.0, 5, 10) == pytest.approx(1.0)
    warm = ScheduleConfig(name="constant", warmup_epochs=2)
    assert warm.lr_at(1.0, 0.5, 10) == pytest.approx(0.25) and warm.lr_at(1.0, 3, 10) == 1.0


def test_augmentation_starts_with_a_resize_to_the_input_size():
    config = tiny_config(**{"input_size": [64, 48]})
    spec = sized_augmentation(config, "training")
    assert spec.children[0].name == "AugResizeDim" and tuple(spec.children[0].params["dims"]) == (48, 64)
    assert [c.name for c in spec.children[1:]] == ["AugRotate", "AugGammaContrast"]
    assert sized_augmentation(config, "validation").name == "AugResizeDim"
    own = tiny_config(**{"augmentation.training": "AugResizeDim dims=(48,64)\nAugFlip p=0.5"})
    assert [c.name for c in sized_augmentation(own, "training").children] == ["AugResizeDim", "AugFlip"]


# --- the loop ---------------------------------------------------------------------------------


class _Fixed:
    """An engine stand-in whose predictions are given: isolates the Dice arithmetic."""

    def __init__(self, classes):
        self.classes = classes

    def predict(self, images):
        return np.eye(4, dtype=np.float32)[self.classes].transpose(0, 3, 1, 2)


def test_validation_dice_is_pooled_per_class():
    labels = np.array([[[0, 1], [1, 2]]])
    prediction = np.array([[[0, 1], [2, 2]]])
    dice = validate(_Fixed(prediction), [(np.zeros((1, 1, 2, 2), np.float32), labels)], 4)
    assert dice == pytest.approx([1.0, 2 / 3, 2 / 3, 1.0])  # canal absent from both: 1


def test_training_run_writes_logs_curves_checkpoints_and_best_onnx(dataset, tmp_path):
    result = train(dataset, tiny_config(epochs=3), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.epochs_done == 3 and 1 <= result.best_epoch <= 3
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) >= {"train_loss", "mean_dice", "dice_vertebra", "dice_disc", "dice_canal", "lr"}
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    log = json.loads((run / "log.json").read_text())
    assert log["best_epoch"] == result.best_epoch and len(log["epochs"]) == 3
    best = max(log["epochs"], key=lambda r: r["mean_dice"])
    assert best["epoch"] == result.best_epoch
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch-0003"]
    meta = metadata.read(run / "best.onnx")
    assert meta.classes == CLASSES and meta.engine == "torch" and meta.input_size == [32, 32]
    assert meta.training_data["best_epoch"] == result.best_epoch
    assert meta.training_data["slice_spacing"] == 2.5  # predict assumes it for PNG slices
    assert meta.training_data["flips"] == []  # configs/tiny.yml has no AugMirror/AugFlip: no --tta for it
    assert meta.spec.depth == 2 and meta.colors[1] == [255, 196, 0]
    # the world it was trained in: one process, no launcher (also in log.csv, log.json and config.yml's header)
    (world,) = meta.training_data["worlds"]
    assert world == {"launcher": "none", "world_size": 1, "nodes": [socket.gethostname()], "ranks_per_node": [1],
                     "devices": ["cpu"], "backend": "none", "global_batch": 4, "per_rank_batch": [4],
                     "batch_norm": "global", "first_epoch": 1, "last_epoch": result.best_epoch}
    assert [r["world_size"] for r in rows] == ["1", "1", "1"] and log["worlds"] == [dict(world, last_epoch=3)]
    assert (run / "config.yml").read_text().startswith(f"# trained from epoch 1 by 1 process (no launcher) on "
                                                       f"{socket.gethostname()}, cpu, batch 4\n")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(run / "best.onnx"), providers=["CPUExecutionProvider"])
    assert metadata.from_properties(session.get_modelmeta().custom_metadata_map, run) == meta  # as predict reads it
    saved = load_config(run / "config.yml")
    assert saved.classes == CLASSES and saved.epochs == 3
    assert not list(run.rglob(".tmp-*"))


def test_same_seed_and_config_give_bit_identical_weights(dataset, tmp_path):
    config = tiny_config(epochs=1)
    train(dataset, config, tmp_path / "a", progress=False)
    train(dataset, config, tmp_path / "b", progress=False)
    ckpt = "checkpoints/epoch-0001/engine.ckpt"
    assert_same_weights(model_state(tmp_path / "a" / ckpt), model_state(tmp_path / "b" / ckpt))
    train(dataset, tiny_config(epochs=1, seed=1), tmp_path / "c", progress=False)
    other = model_state(tmp_path / "c" / ckpt)
    assert not all(torch.equal(v, other[k]) for k, v in model_state(tmp_path / "a" / ckpt).items())


class _Killed(SliceLoaderSource):
    """Dies in the middle of epoch 2, as a kill would (nothing after the failing batch runs)."""

    def batches(self, split, epoch):
        for step, batch in enumerate(super().batches(split, epoch)):
            if split == "training" and epoch == 1 and step == 1:
                raise KeyboardInterrupt
            yield batch


def test_resume_after_an_interruption_matches_an_uninterrupted_run(dataset, tmp_path):
    config = tiny_config(epochs=3)
    train(dataset, config, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(dataset, config, tmp_path / "killed", batch_source=_Killed, progress=False)
    killed = tmp_path / "killed"
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["epoch-0001"]
    result = resume(killed, progress=False)
    assert result.epochs_done == 3
    ckpt = "checkpoints/epoch-0003/engine.ckpt"
    assert_same_weights(model_state(tmp_path / "straight" / ckpt), model_state(killed / ckpt))
    assert (killed / "log.csv").read_text() .count("\n") == 4
    before = (killed / "log.json").read_text()
    assert resume(killed, progress=False).epochs_done == 3  # a finished run has nothing left to do
    assert (killed / "log.json").read_text() == before


def test_early_stopping_stops_when_the_metric_stalls(dataset, tmp_path):
    # No BN and a vanishing learning rate: the predictions, hence the Dice, cannot change.
    config = tiny_config(**{"epochs": 6, "model.norm": "none", "optimizer.name": "sgd", "optimizer.lr": 1e-12,
                            "early_stopping.patience": 2})
    result = train(dataset, config, tmp_path / "run", progress=False)
    assert result.stopped_early and result.epochs_done == 3 and result.best_epoch == 1
    assert len(json.loads((tmp_path / "run" / "log.json").read_text())["epochs"]) == 3


def test_dataset_without_validation_split_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "data", splits={"training": [0, 1, 2], "test": [3]}, n_train=3, n_val=1)
    with pytest.raises(LumbarsegError, match="no validation split"):
        train(ds, tiny_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_training_crops_must_fit_the_network_and_a_bad_size_leaves_no_run(dataset, tmp_path):
    cropped = tiny_config(**{"augmentation.training": "AugRandomCrop size=(16,24) border_type=\"constant\" "
                                                      "border_value=0", "epochs": 1})
    assert train(dataset, cropped, tmp_path / "crops", progress=False).epochs_done == 1
    config = tiny_config(**{"augmentation.training": "AugResizeDim dims=(18,18)"})
    with pytest.raises(LumbarsegError, match=r"size \(18, 18\) is not divisible by 2\*\*depth = 4"):
        train(dataset, config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_never_overwritten(dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(LumbarsegError, match="already exists and is not empty"):
        train(dataset, tiny_config(), run, progress=False)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_resume_with_a_dataset_of_other_classes_is_refused(dataset, tmp_path):
    train(dataset, tiny_config(epochs=1), tmp_path / "run", progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    other = make_dataset(tmp_path / "other", classes=["background", "vertebra", "disc"])
    with pytest.raises(LumbarsegError, match="disagree with the run's classes"):
        resume(tmp_path / "run", dataset=other, progress=False)
    assert before == {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}


def test_init_from_onnx_fine_tunes_and_checks_classes(dataset, tmp_path):
    train(dataset, tiny_config(epochs=1), tmp_path / "first", progress=False)
    model = tmp_path / "first" / "best.onnx"
    result = train(dataset, tiny_config(epochs=1), tmp_path / "tuned", init=model, progress=False)
    assert result.epochs_done == 1
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["init"] == str(model.resolve())
    other = make_dataset(tmp_path / "other", classes=["background", "vertebra", "disc"])
    with pytest.raises(LumbarsegError, match="disagree with the dataset"):
        train(other, tiny_config(epochs=1), tmp_path / "bad", init=model, progress=False)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model.read_bytes()[:500])
    with pytest.raises(LumbarsegError, match="not a readable ONNX model"):
        train(dataset, tiny_config(epochs=1), tmp_path / "bad", init=corrupt, progress=False)
    assert not (tmp_path / "bad").exists()


def test_resume_with_a_corrupt_checkpoint_is_a_clear_error(dataset, tmp_path):
    train(dataset, tiny_config(epochs=1), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "epoch-0001" / "engine.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(LumbarsegError, match="not a readable checkpoint"):
        resume(tmp_path / "run", progress=False)


def test_export_run_best_and_last(dataset, tmp_path):
    train(dataset, tiny_config(epochs=2), tmp_path / "run", progress=False)
    for which in ("best", "last"):
        out = trainer.export_run(tmp_path / "run", tmp_path / f"{which}.onnx", which)
        meta = metadata.read(out)
        assert meta.training_data["checkpoint"] == which and meta.classes == CLASSES
    with pytest.raises(LumbarsegError, match="not a lumbarseg run directory"):
        trainer.export_run(tmp_path, tmp_path / "x.onnx")


def test_a_25d_run_records_its_slice_offsets_and_starts_from_an_inflated_2d_model(tmp_path):
    """2D model -> --init of a 2.5D run: epoch 0 is the 2D model (neighbour weights zero), then it trains."""
    from lumbarseg.data.context import write_with_slice_channels
    from lumbarseg.data.deephealth_yaml import load_dataset, write_dataset

    flat = make_dataset(tmp_path / "data", n_train=4, n_val=4, per_patient=4)
    ctx = tmp_path / "data" / "ctx.yml"
    write_with_slice_channels(flat, ctx, [-1, 0, 1])
    train(flat, tiny_config(epochs=1), tmp_path / "flat", progress=False)
    with pytest.raises(LumbarsegError, match=r"3 channel\(s\).*model.in_channels is 1"):
        train(ctx, tiny_config(epochs=1), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    config = tiny_config(epochs=1, **{"model.in_channels": 3, "optimizer.lr": 1e-9})
    train(ctx, config, tmp_path / "ctx", init=tmp_path / "flat" / "best.onnx", progress=False)
    meta = metadata.read(tmp_path / "ctx" / "best.onnx")
    assert meta.spec.in_channels == 3 and meta.slice_offsets == [-2.5, 0.0, 2.5]  # slice_spacing 2.5 mm
    first = model_state(tmp_path / "flat" / "best.ckpt")["encoder.0.0.0.weight"]
    weights = model_state(tmp_path / "ctx" / "best.ckpt")["encoder.0.0.0.weight"]
    assert weights.shape[1] == 3
    torch.testing.assert_close(weights[:, 1], first[:, 0], atol=1e-6, rtol=0)  # lr 1e-9: the inflated start
    assert weights[:, [0, 2]].abs().max() < 1e-6
    flat_dice = json.loads((tmp_path / "flat" / "log.json").read_text())["epochs"][0]["mean_dice"]
    ctx_dice = json.loads((tmp_path / "ctx" / "log.json").read_text())["epochs"][0]["mean_dice"]
    assert ctx_dice == pytest.approx(flat_dice, abs=1e-6)
    result = train(ctx, tiny_config(epochs=1, **{"model.in_channels": 3}), tmp_path / "scratch", progress=False)
    assert result.epochs_done == 1
    unplaced = load_dataset(ctx)
    del unplaced.meta["slice_spacing"]
    write_dataset(unplaced, tmp_path / "data" / "unplaced.yml")
    with pytest.raises(LumbarsegError, match="no slice_spacing"):
        train(tmp_path / "data" / "unplaced.yml", tiny_config(epochs=1, **{"model.in_channels": 3}),
              tmp_path / "unplaced", progress=False)
    assert not (tmp_path / "unplaced").exists()

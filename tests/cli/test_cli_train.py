"""`lumbarseg train` and `lumbarseg export` from the command line: runs, kill -9 + resume, bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training tests use the PyTorch engine")

from synthetic_training import CLASSES, TINY_CONFIG, make_dataset  # noqa: E402

from lumbarseg.cli import main  # noqa: E402
from lumbarseg.config import load_config  # noqa: E402
from lumbarseg.model import metadata  # noqa: E402

REPO = next(p for p in Path(__file__).resolve().parents if (p / "setup.py").is_file())  # the checkout


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--out", str(run),
                 "--epochs", "2", "--lr", "0.02", "--no-progress"]) == 0
    return run


def snapshot(folder: Path):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error_line(capsys, code):
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lumbarseg: error: "), err
    return err[0]


def test_train_with_overrides_then_export(finished_run, tmp_path, capsys):
    config = load_config(finished_run / "config.yml")
    assert config.epochs == 2 and config.optimizer.lr == 0.02 and config.classes == CLASSES
    assert (finished_run / "best.onnx").is_file() and (finished_run / "curves.png").is_file()
    assert main(["export", str(finished_run), "-o", str(tmp_path / "m.onnx"), "--checkpoint", "last"]) == 0
    assert metadata.read(tmp_path / "m.onnx").training_data["epochs"] == 2
    capsys.readouterr()
    code = main(["export", str(tmp_path), "-o", str(tmp_path / "x.onnx")])
    assert "not a lumbarseg run directory" in one_error_line(capsys, code)


def test_kill_9_then_resume_finishes_with_the_same_epoch_count(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "lumbarseg", "train", "--dataset", str(dataset), "--config", str(TINY_CONFIG),
         "--out", str(run), "--epochs", "6", "--no-progress"], cwd=str(REPO), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            if (run / "checkpoints" / "epoch-0002").is_dir():
                break
            time.sleep(0.01)
        else:
            pytest.fail("the training process ended or stalled before epoch 2")
        time.sleep(0.2)  # into epoch 3, possibly mid-write
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    json.loads((run / "run.json").read_text())
    load_config(run / "config.yml")
    metadata.read(run / "best.onnx")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "6 epochs" in capsys.readouterr().out
    log = json.loads((run / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch-0006"]
    assert not list(run.rglob(".tmp-*"))
    metadata.read(run / "best.onnx")


def test_refuses_a_non_empty_out_dir(dataset, finished_run, capsys):
    before = snapshot(finished_run)
    code = main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--out", str(finished_run)])
    assert "already exists and is not empty" in one_error_line(capsys, code)
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("args, message", [
    (["--engine", "tensorflow"], "unknown engine 'tensorflow'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "fpga"], "fpga needs --engine eddl"),
    (["--depth", "6"], "not divisible by 2**depth = 64"),
    (["--optimizer", "adamw"], "unknown optimiser 'adamw'"),
])
def test_bad_options_are_one_line_and_write_nothing(dataset, tmp_path, capsys, args, message):
    code = main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run")]
                + args)
    assert message in one_error_line(capsys, code)
    assert not (tmp_path / "run").exists()


def test_eddl_engine_without_pyeddl_is_a_clear_error(dataset, tmp_path, capsys, monkeypatch):
    # Where pyeddl is installed, hide it (and any already-imported EDDL engine) as on a machine without it.
    for name in ("pyeddl", "pyeddl.eddl", "pyeddl.tensor", "pyecvl"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "lumbarseg.engines.eddl_engine", raising=False)
    code = main(["train", "--dataset", str(dataset), "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"),
                 "--engine", "eddl"])
    line = one_error_line(capsys, code)
    assert "engine eddl: pyeddl is not installed" in line and "pip install 'lumbarseg[eddl]'" in line
    assert not (tmp_path / "run").exists()


def test_dataset_without_validation_split(tmp_path, capsys):
    ds = make_dataset(tmp_path / "data", n_train=3, n_val=0)
    code = main(["train", "--dataset", str(ds), "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run")])
    assert "no validation split" in one_error_line(capsys, code)
    assert not (tmp_path / "run").exists()


def test_init_model_with_other_classes_or_corrupt(finished_run, tmp_path, capsys):
    other = make_dataset(tmp_path / "other", classes=["background", "vertebra"])
    model = finished_run / "best.onnx"
    code = main(["train", "--dataset", str(other), "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"),
                 "--init", str(model)])
    assert "disagree with the dataset" in one_error_line(capsys, code)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    code = main(["train", "--dataset", str(other), "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"),
                 "--init", str(corrupt)])
    assert "corrupt.onnx" in one_error_line(capsys, code)
    assert not (tmp_path / "run").exists()


def test_resume_refusals_leave_the_run_untouched(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    code = main(["train", "--resume", str(finished_run), "--epochs", "9"])
    assert "a resumed run keeps its config; drop --epochs" in one_error_line(capsys, code)
    other = make_dataset(tmp_path / "other", classes=["background", "vertebra", "disc"])
    code = main(["train", "--resume", str(finished_run), "--dataset", str(other)])
    assert "disagree with the run's classes" in one_error_line(capsys, code)
    code = main(["train", "--resume", str(tmp_path)])
    assert "not a lumbarseg run directory" in one_error_line(capsys, code)
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_short_run_on_real_spider_slices(spider_dir, tmp_path):
    """Three patients, two slices each, built into a dataset and trained one epoch at 80x64."""
    from lumbarseg.data.builders import from_slices
    from lumbarseg.data.split import SplitSpec
    from lumbarseg.labels import LabelMap

    patients = sorted({p.name.split("_")[0] for p in (spider_dir / "images").glob("*.png")})[:3]
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for patient in patients:
        for path in sorted((spider_dir / "images").glob(f"{patient}_t2_SPACE_slice*.png"))[5:7]:
            shutil.copy(path, tmp_path / "images" / path.name)
            shutil.copy(spider_dir / "masks" / path.name, tmp_path / "masks" / path.name)
    ds = tmp_path / "spider.yml"
    from_slices(tmp_path / "images", tmp_path / "masks", ds, LabelMap.load("spider-png"),
                split=SplitSpec(fractions=(2, 1, 0)), spacing=(0.47, 0.47, 0.9), progress=False)
    config = tmp_path / "exp.yml"
    config.write_text(load_config(TINY_CONFIG, {"input_size": [80, 64], "spacing": None}).to_yaml())
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(ds), "--config", str(config), "--out", str(run), "--epochs", "1",
                 "--batch-size", "2", "--no-progress"]) == 0
    meta = metadata.read(run / "best.onnx")
    assert meta.classes == ["background", "vertebra", "disc", "canal"]
    assert meta.input_size == [80, 64] and meta.spacing == pytest.approx([3.76, 3.76])
